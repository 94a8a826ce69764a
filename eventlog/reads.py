"""Reads of the event log: pages for the REST API, and for the realtime consumers (``log_position``,
``campaign_heads``, ``events_after`` run in a thread: the ORM is synchronous)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Min

from campaigns.models import Campaign
from eventlog.models import CampaignEvent
from eventlog.publisher import event_frame

PAGE = 500
EVENTS_MAX_LIMIT = 1000


def campaign_events(campaign: Campaign, *, after: int = 0, limit: int = 100) -> list[CampaignEvent]:
    """Durable events with sequence > ``after``, ascending, at most ``limit``."""
    limit = max(1, min(limit, EVENTS_MAX_LIMIT))
    return list(CampaignEvent.objects.filter(campaign=campaign, sequence__gt=after).order_by("sequence")[:limit])


@dataclass(frozen=True)
class LogPosition:
    last_sequence: int
    first_retained: int | None  # the oldest sequence still in the log (None when empty, or not asked)


@database_sync_to_async
def log_position(campaign_pk: int, *, resuming: bool = False) -> LogPosition:
    """Where the campaign's log ends; where it starts too when a client resumes (pruning may have cut it)."""
    last = Campaign.objects.filter(pk=campaign_pk).values_list("last_sequence", flat=True).first() or 0
    first = None
    if resuming:
        first = CampaignEvent.objects.filter(campaign_id=campaign_pk).aggregate(first=Min("sequence"))["first"]
    return LogPosition(last_sequence=last, first_retained=first)


HEADS_BATCH = 2000


def read_heads(campaign_pks: list[int]) -> dict[int, int]:
    """The last stored sequence of each campaign (one query per HEADS_BATCH campaigns)."""
    heads: dict[int, int] = {}
    for start in range(0, len(campaign_pks), HEADS_BATCH):
        batch = campaign_pks[start : start + HEADS_BATCH]
        heads.update(Campaign.objects.filter(pk__in=batch).values_list("pk", "last_sequence"))
    return heads


campaign_heads = database_sync_to_async(read_heads)


@database_sync_to_async
def events_after(campaign_pk: int, campaign_id: str, after: int, limit: int = PAGE) -> list[tuple[int, dict[str, Any]]]:
    """(sequence, frame) of the durable events after ``after``, ascending; frames marked ``replayed``."""
    rows = CampaignEvent.objects.filter(campaign_id=campaign_pk, sequence__gt=after).order_by("sequence")[:limit]
    frames = []
    for row in rows:
        frame = event_frame(row, campaign_public_id=campaign_id)
        frame["replayed"] = True
        frames.append((row.sequence, frame))
    return frames
