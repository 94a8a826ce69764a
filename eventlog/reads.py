"""Reads of the event log: pages for the REST API, and for the realtime consumers (``log_position``,
``campaign_heads``, ``events_after`` run in the database thread: the ORM is synchronous; the first
and last are batched across sockets, marketing_agents/batching.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Min

from campaigns.models import Campaign
from eventlog.models import CampaignEvent
from eventlog.publisher import event_frame
from marketing_agents.batching import BatchedRead

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


def read_positions(keys: list[tuple[int, bool]]) -> dict[tuple[int, bool], LogPosition]:
    """Where each campaign's log ends (and, for a key with ``resuming``, where it starts: pruning may
    have cut it): two queries for the whole batch."""
    pks = {pk for pk, _ in keys}
    last = dict(Campaign.objects.filter(pk__in=pks).values_list("pk", "last_sequence"))
    resuming = {pk for pk, wanted in keys if wanted}
    first = dict(
        CampaignEvent.objects.filter(campaign_id__in=resuming)
        .values("campaign_id")
        .annotate(first=Min("sequence"))
        .values_list("campaign_id", "first")
        if resuming
        else []
    )
    return {
        (pk, wanted): LogPosition(last_sequence=last.get(pk) or 0, first_retained=first.get(pk) if wanted else None)
        for pk, wanted in keys
    }


_positions = BatchedRead(read_positions)


async def log_position(campaign_pk: int, *, resuming: bool = False) -> LogPosition:
    """Where the campaign's log ends, read after the call (batched with the other sockets' reads)."""
    return await _positions.get((campaign_pk, resuming))


HEADS_BATCH = 2000


def read_heads(campaign_pks: list[int]) -> dict[int, int]:
    """The last stored sequence of each campaign (one query per HEADS_BATCH campaigns)."""
    heads: dict[int, int] = {}
    for start in range(0, len(campaign_pks), HEADS_BATCH):
        batch = campaign_pks[start : start + HEADS_BATCH]
        heads.update(Campaign.objects.filter(pk__in=batch).values_list("pk", "last_sequence"))
    return heads


campaign_heads = database_sync_to_async(read_heads)


def read_events_after(keys: list[tuple[int, str, int]]) -> dict[tuple[int, str, int], Any]:
    """For each (campaign pk, public id, after): (sequence, frame) of the next PAGE durable events,
    ascending, frames marked ``replayed`` (or the exception reading them raised); one query per
    distinct key. The frames are shared by every socket that asked the same question: they are read,
    never changed."""
    pages: dict[tuple[int, str, int], Any] = {}
    for campaign_pk, campaign_id, after in keys:
        try:
            rows = CampaignEvent.objects.filter(campaign_id=campaign_pk, sequence__gt=after).order_by("sequence")
            frames = []
            for row in rows[:PAGE]:
                frame = event_frame(row, campaign_public_id=campaign_id)
                frame["replayed"] = True
                frames.append((row.sequence, frame))
            pages[(campaign_pk, campaign_id, after)] = frames
        except Exception as exc:  # this campaign's sockets fail (and reconnect); the others' pages are read
            pages[(campaign_pk, campaign_id, after)] = exc
    return pages


_pages = BatchedRead(read_events_after, default=[])


async def events_after(campaign_pk: int, campaign_id: str, after: int) -> list[tuple[int, dict[str, Any]]]:
    """The next PAGE events after ``after`` (batched with the other sockets' reads)."""
    return await _pages.get((campaign_pk, campaign_id, after))
