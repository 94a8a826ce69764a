"""Writes of the event log besides publishing (eventlog.publisher): pruning."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from eventlog.models import CampaignEvent


def events_prune() -> int:
    """Delete events older than EVENT_RETENTION_DAYS. A resume from before the oldest kept event gets a
    snapshot with ``resync`` instead of a replay; sequences are never reused (they live on the campaign)."""
    cutoff = timezone.now() - timedelta(days=settings.EVENT_RETENTION_DAYS)
    deleted, _ = CampaignEvent.objects.filter(emitted_at__lt=cutoff).delete()
    return deleted
