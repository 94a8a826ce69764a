"""Reads of the event log: pages for the REST API, and for the realtime consumers (``log_position``,
``log_heads``, ``events_after`` run in the database thread: the ORM is synchronous; the first
and last are batched across sockets, marketing_agents/batching.py).

The consumers read every log the same way, whether it is a campaign's or a stream's (an account,
operations): a ``LogRef`` names it, and each read asks the right head row and table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Min

from campaigns.models import Campaign
from eventlog.models import CampaignEvent, Stream, StreamEvent
from eventlog.publisher import event_frame, group_name, stream_frame, stream_group
from marketing_agents.batching import BatchedRead

PAGE = 500
EVENTS_MAX_LIMIT = 1000


def campaign_events(campaign: Campaign, *, after: int = 0, limit: int = 100) -> list[CampaignEvent]:
    """Durable events with sequence > ``after``, ascending, at most ``limit``."""
    limit = max(1, min(limit, EVENTS_MAX_LIMIT))
    return list(CampaignEvent.objects.filter(campaign=campaign, sequence__gt=after).order_by("sequence")[:limit])


CAMPAIGN = "campaign"
STREAM = "stream"


@dataclass(frozen=True)
class LogRef:
    """One log a socket can follow: a campaign's (``name`` is its public id) or a stream's (``name``
    is its kind: ``account`` or ``ops``). ``group`` is its channel-layer group."""

    kind: str
    pk: int
    name: str

    @property
    def group(self) -> str:
        return group_name(self.name) if self.kind == CAMPAIGN else stream_group(self.pk)


def campaign_log(campaign: Campaign) -> LogRef:
    return LogRef(CAMPAIGN, campaign.pk, campaign.public_id)


def stream_log(stream: Stream) -> LogRef:
    return LogRef(STREAM, stream.pk, stream.kind)


# Per kind of log: its head rows, its events table and the column naming the log there.
_TABLES = {CAMPAIGN: (Campaign, CampaignEvent, "campaign_id"), STREAM: (Stream, StreamEvent, "stream_id")}


def _heads(kind: str, pks: set[int]) -> dict[int, int]:
    head, _, _ = _TABLES[kind]
    return dict(head.objects.filter(pk__in=pks).values_list("pk", "last_sequence"))


@dataclass(frozen=True)
class LogPosition:
    last_sequence: int
    first_retained: int | None  # the oldest sequence still in the log (None when empty, or not asked)


def read_positions(keys: list[tuple[LogRef, bool]]) -> dict[tuple[LogRef, bool], LogPosition]:
    """Where each log ends (and, for a key with ``resuming``, where it starts: pruning may have cut
    it): two queries per kind of log in the batch."""
    last: dict[tuple[str, int], int] = {}
    first: dict[tuple[str, int], int] = {}
    for kind in {ref.kind for ref, _ in keys}:
        _, table, column = _TABLES[kind]
        last.update(
            ((kind, pk), head) for pk, head in _heads(kind, {ref.pk for ref, _ in keys if ref.kind == kind}).items()
        )
        resuming = {ref.pk for ref, wanted in keys if wanted and ref.kind == kind}
        if resuming:
            rows = (
                table.objects.filter(**{f"{column}__in": resuming})
                .values(column)
                .annotate(first=Min("sequence"))
                .values_list(column, "first")
            )
            first.update(((kind, pk), sequence) for pk, sequence in rows)
    return {
        (ref, wanted): LogPosition(
            last_sequence=last.get((ref.kind, ref.pk)) or 0,
            first_retained=first.get((ref.kind, ref.pk)) if wanted else None,
        )
        for ref, wanted in keys
    }


_positions = BatchedRead(read_positions)


async def log_position(log: LogRef, *, resuming: bool = False) -> LogPosition:
    """Where the log ends, read after the call (batched with the other sockets' reads)."""
    return await _positions.get((log, resuming))


HEADS_BATCH = 2000


def read_heads(logs: list[LogRef]) -> dict[LogRef, int]:
    """The last stored sequence of each log (one query per kind and HEADS_BATCH logs)."""
    heads: dict[LogRef, int] = {}
    for kind in {log.kind for log in logs}:
        of_kind = [log for log in logs if log.kind == kind]
        for start in range(0, len(of_kind), HEADS_BATCH):
            batch = of_kind[start : start + HEADS_BATCH]
            found = _heads(kind, {log.pk for log in batch})
            heads.update((log, found[log.pk]) for log in batch if log.pk in found)
    return heads


log_heads = database_sync_to_async(read_heads)


def _frame(log: LogRef, row: CampaignEvent | StreamEvent) -> dict[str, Any]:
    if log.kind == CAMPAIGN:
        return event_frame(row, campaign_public_id=log.name)
    return stream_frame(row, stream_kind=log.name)


def read_events_after(keys: list[tuple[LogRef, int]]) -> dict[tuple[LogRef, int], Any]:
    """For each (log, after): (sequence, frame) of the next PAGE durable events, ascending, frames
    marked ``replayed`` (or the exception reading them raised); one query per distinct key. The
    frames are shared by every socket that asked the same question: they are read, never changed."""
    pages: dict[tuple[LogRef, int], Any] = {}
    for log, after in keys:
        try:
            _, table, column = _TABLES[log.kind]
            rows = table.objects.filter(**{column: log.pk, "sequence__gt": after}).order_by("sequence")
            frames = []
            for row in rows[:PAGE]:
                frame = _frame(log, row)
                frame["replayed"] = True
                frames.append((row.sequence, frame))
            pages[(log, after)] = frames
        except Exception as exc:  # this log's sockets fail (and reconnect); the others' pages are read
            pages[(log, after)] = exc
    return pages


_pages = BatchedRead(read_events_after, default=[])


async def events_after(log: LogRef, after: int) -> list[tuple[int, dict[str, Any]]]:
    """The next PAGE events after ``after`` (batched with the other sockets' reads)."""
    return await _pages.get((log, after))
