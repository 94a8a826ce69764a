"""The one publisher. Every event of a campaign goes through ``publish`` or ``publish_transient``,
every event of an account or operations stream through ``publish_to_stream``.

``publish`` hands out the campaign's next sequence with a single ``UPDATE … RETURNING`` on the
campaign row (``publish_to_stream`` on the stream's row), which the database serializes between
concurrent publishers (a row lock on PostgreSQL, the write lock on SQLite), stores the event in the
same transaction as the state change that caused it, and sends it to the log's group only once that
transaction commits. A rolled-back change therefore never reaches a client, and a client never sees
a sequence that is not in the log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.payloads import isoformat
from eventlog import layer
from eventlog.metrics import EVENTS_PUBLISHED
from eventlog.models import CampaignEvent, Stream, StreamEvent

# Message type of an event on the channel layer (the realtime fan-out's ``campaign_event`` handler).
LAYER_MESSAGE_TYPE = "campaign.event"


def group_name(campaign_public_id: str) -> str:
    return f"campaign.{campaign_public_id}"


def stream_group(stream_pk: int) -> str:
    return f"stream.{stream_pk}"


# Called inside the publishing transaction with (owner's user id, frame) for every durable event of a
# campaign or an account: how apps above the log (webhooks) follow it without the log importing them.
listeners: list[Callable[[int, dict[str, Any]], None]] = []


def _notify(owner_id: int | None, frame: dict[str, Any]) -> None:
    if owner_id is not None:
        for listener in listeners:
            listener(owner_id, frame)


def _normalize(data: dict[str, Any]) -> dict[str, Any]:
    """What is stored is exactly what is sent: Decimals, datetimes and UUIDs become JSON now."""
    if not isinstance(data, dict):
        raise TypeError("event data must be a dict")
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _next_sequence(head: type[Campaign] | type[Stream], pk: int) -> int:
    """The next sequence of a log, from its head row (a campaign or a stream)."""
    table = connection.ops.quote_name(head._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_sequence = last_sequence + 1 WHERE id = %s RETURNING last_sequence",
            [pk],
        )
        row = cursor.fetchone()
    if row is None:
        raise head.DoesNotExist(f"{head._meta.model_name} {pk} does not exist")
    return row[0]


def event_frame(event: CampaignEvent, *, campaign_public_id: str) -> dict[str, Any]:
    """The shape shared by the socket's ``event`` frame and ``GET …/events/`` (without ``type``)."""
    return {
        "type": "event",
        "event": event.event,
        "campaign_id": campaign_public_id,
        "run_id": event.run_public_id or None,
        "sequence": event.sequence,
        "emitted_at": isoformat(event.emitted_at),
        "data": event.data,
    }


def publish(campaign: Campaign, event: str, data: dict[str, Any], *, run_id: str | None = None) -> CampaignEvent:
    """Store a durable event with the campaign's next sequence; send it to subscribers after commit."""
    payload = _normalize(data)
    with transaction.atomic():
        stored = CampaignEvent.objects.create(
            campaign=campaign,
            sequence=_next_sequence(Campaign, campaign.pk),
            event=event,
            run_public_id=run_id or "",
            data=payload,
            emitted_at=timezone.now(),
        )
        frame = event_frame(stored, campaign_public_id=campaign.public_id)
        _notify(campaign.owner_id, frame)
        group = group_name(campaign.public_id)
        message = {"type": LAYER_MESSAGE_TYPE, "log": group, "sequence": stored.sequence, "frame": dumps(frame)}
        transaction.on_commit(lambda: _send(group, event, message))
    return stored


def stream_frame(event: StreamEvent, *, stream_kind: str) -> dict[str, Any]:
    """An account or operations event as the socket sends it (PROTOCOL.md §11)."""
    return {
        "type": "event",
        "stream": stream_kind,
        "event": event.event,
        "sequence": event.sequence,
        "emitted_at": isoformat(event.emitted_at),
        "data": event.data,
    }


def publish_to_stream(stream: Stream, event: str, data: dict[str, Any]) -> StreamEvent:
    """Store a durable event with the stream's next sequence; send it to subscribers after commit."""
    payload = _normalize(data)
    with transaction.atomic():
        stored = StreamEvent.objects.create(
            stream=stream,
            sequence=_next_sequence(Stream, stream.pk),
            event=event,
            data=payload,
            emitted_at=timezone.now(),
        )
        group = stream_group(stream.pk)
        frame = stream_frame(stored, stream_kind=stream.kind)
        _notify(stream.user_id, frame)
        message = {"type": LAYER_MESSAGE_TYPE, "log": group, "sequence": stored.sequence, "frame": dumps(frame)}
        transaction.on_commit(lambda: _send(group, event, message))
    return stored


def _send(group: str, event: str, message: dict[str, Any]) -> None:
    EVENTS_PUBLISHED.labels(event).inc()
    layer.group_send(group, message)


def publish_transient(
    campaign: Campaign, event: str, data: dict[str, Any], *, run_id: str | None = None
) -> dict[str, Any]:
    """Send an event that is not stored and has no sequence (``artifact.chunk``).

    It carries ``after_sequence``, the last durable sequence before it, so a client can place it.
    """
    after = Campaign.objects.filter(pk=campaign.pk).values_list("last_sequence", flat=True).first() or 0
    frame = {
        "type": "event",
        "event": event,
        "campaign_id": campaign.public_id,
        "run_id": run_id,
        "after_sequence": after,
        "emitted_at": isoformat(timezone.now()),
        "data": _normalize(data),
    }
    group = group_name(campaign.public_id)
    message = {
        "type": LAYER_MESSAGE_TYPE,
        "log": group,
        "sequence": None,
        "after_sequence": after,
        "frame": dumps(frame),
    }
    transaction.on_commit(lambda: _send(group, event, message))
    return frame


def dumps(frame: dict[str, Any]) -> str:
    """A frame as sent: compact JSON."""
    return json.dumps(frame, separators=(",", ":"))
