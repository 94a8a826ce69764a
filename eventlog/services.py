"""Writes of the event log besides publishing (eventlog.publisher): the streams' head rows, pruning."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from eventlog.models import CampaignEvent, Stream, StreamEvent, StreamKind


def _get_or_create(kind: str, user_id: int | None) -> Stream:
    stream = Stream.objects.filter(kind=kind, user_id=user_id).first()
    if stream is not None:
        return stream
    try:
        with transaction.atomic():
            return Stream.objects.create(kind=kind, user_id=user_id)
    except IntegrityError:  # created meanwhile by another publisher or socket
        return Stream.objects.get(kind=kind, user_id=user_id)


def account_stream(user_id: int) -> Stream:
    """The user's account stream (made on first use)."""
    return _get_or_create(StreamKind.ACCOUNT, user_id)


def ops_stream() -> Stream:
    """The one operations stream (made on first use)."""
    return _get_or_create(StreamKind.OPS, None)


def events_prune() -> int:
    """Delete events older than EVENT_RETENTION_DAYS, from every log. A resume from before the oldest
    kept event gets a snapshot with ``resync`` instead of a replay; sequences are never reused (they
    live on the campaign or the stream)."""
    cutoff = timezone.now() - timedelta(days=settings.EVENT_RETENTION_DAYS)
    deleted, _ = CampaignEvent.objects.filter(emitted_at__lt=cutoff).delete()
    stream_deleted, _ = StreamEvent.objects.filter(emitted_at__lt=cutoff).delete()
    return deleted + stream_deleted
