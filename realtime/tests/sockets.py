"""What the native socket tests share: opening connections through the real ASGI app, reading
frames, publishing events (fixtures ``ws`` and ``users`` are in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

from campaigns.models import Campaign
from eventlog import layer as realtime_layers
from eventlog.models import CampaignEvent
from eventlog.publisher import event_frame, publish
from marketing_agents.asgi import application
from realtime.fanout import get_fanout
from realtime.signalr import stateful

PATH = "/ws/campaigns/"
ERROR_CODES = {
    "bad_request",
    "unknown_type",
    "not_found",
    "rate_limited",
    "too_many_subscriptions",
    "message_too_large",
    "unauthenticated",
    "token_expired",
    "internal_error",
    "too_many_connections",
}
COMMANDS = ["subscribe", "unsubscribe", "snapshot", "cancel", "ping"]
SNAPSHOT_FIELDS = {
    "campaign_id",
    "run_id",
    "current_state",
    "completed_artifacts",
    "pending_artifacts",
    "audit_status",
    "last_event_sequence",
    "timestamp",
    "artifacts",
    "compliance",
}
ARTIFACT_FIELDS = {"id", "campaign_id", "run_id", "type", "content", "metadata", "created_at", "agent_name", "version"}
EVENT_FIELDS = {"type", "event", "campaign_id", "run_id", "sequence", "emitted_at", "data"}

db = database_sync_to_async


# --- helpers ------------------------------------------------------------------------------------------------


def token_for(user, lifetime: timedelta | None = None) -> str:
    token = AccessToken.for_user(user)
    if lifetime is not None:
        token.set_exp(from_time=timezone.now(), lifetime=lifetime)
    return str(token)


def assert_clean_error(frame: dict[str, Any], code: str | None = None) -> None:
    """An error frame as the protocol defines it, with nothing internal in it."""
    assert frame["type"] == "error", frame
    assert frame["code"] in ERROR_CODES, frame
    if code is not None:
        assert frame["code"] == code, frame
    assert isinstance(frame["message"], str) and frame["message"].strip(), frame
    text = json.dumps(frame)
    assert "Traceback" not in text and 'File \\"' not in text and 'File "' not in frame["message"], frame


async def send_raw(comm: WebsocketCommunicator, text: str | None = None, data: bytes | None = None) -> None:
    """A text or binary frame, empty ones included (``send_to`` refuses those)."""
    if text is not None:
        await comm.send_input({"type": "websocket.receive", "text": text})
    else:
        await comm.send_input({"type": "websocket.receive", "bytes": data})


async def recv(comm: WebsocketCommunicator, timeout: float = 5) -> dict[str, Any]:
    return await comm.receive_json_from(timeout=timeout)


async def expect_close(comm: WebsocketCommunicator, code: int, timeout: float = 5) -> None:
    output = await comm.receive_output(timeout)
    assert output["type"] == "websocket.close", output
    assert output.get("code") == code, output


async def expect_silence(comm: WebsocketCommunicator, timeout: float = 0.5) -> None:
    assert await comm.receive_nothing(timeout=timeout, interval=0.02), "a frame arrived where none was expected"


async def drain(comm: WebsocketCommunicator, quiet: float = 0.5) -> list[Any]:
    """Every frame (or close) that arrives until the connection has been quiet for ``quiet`` seconds."""
    outputs: list[Any] = []
    while not await comm.receive_nothing(timeout=quiet, interval=0.02):
        output = await comm.receive_output()
        outputs.append(json.loads(output["text"]) if output["type"] == "websocket.send" else output)
    return outputs


async def expect_error(comm: WebsocketCommunicator, code: str, request_id: str | None = None) -> dict[str, Any]:
    frame = await recv(comm)
    assert_clean_error(frame, code)
    if request_id is None:
        assert "request_id" not in frame, frame
    else:
        assert frame["request_id"] == request_id, frame
    return frame


async def assert_usable(comm: WebsocketCommunicator) -> None:
    request_id = uuid.uuid4().hex
    await comm.send_json_to({"type": "ping", "request_id": request_id})
    assert await recv(comm) == {"type": "pong", "request_id": request_id}


async def subscribe(
    comm: WebsocketCommunicator, campaign: Campaign, last_sequence: int | None = None, request_id: str | None = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "subscribe", "campaign_id": campaign.public_id}
    if last_sequence is not None:
        frame["last_sequence"] = last_sequence
    if request_id is not None:
        frame["request_id"] = request_id
    await comm.send_json_to(frame)
    answer = await recv(comm)
    assert answer["type"] == "subscribed", answer
    assert answer["campaign_id"] == campaign.public_id
    return answer


async def receive_events(comm: WebsocketCommunicator, count: int, timeout: float = 5) -> list[dict[str, Any]]:
    frames = [await recv(comm, timeout) for _ in range(count)]
    for frame in frames:
        assert frame["type"] == "event", frames
    return frames


async def publish_progress(campaign: Campaign, *percentages: int) -> list[CampaignEvent]:
    return [await db(publish)(campaign, "progress", {"percentage": p, "message": f"at {p}%"}) for p in percentages]


def insert_silently(campaign: Campaign, percentage: int) -> CampaignEvent:
    """An event stored in the log whose channel-layer message was lost: never sent to the group."""
    with transaction.atomic():
        Campaign.objects.filter(pk=campaign.pk).update(last_sequence=F("last_sequence") + 1)
        sequence = Campaign.objects.values_list("last_sequence", flat=True).get(pk=campaign.pk)
        return CampaignEvent.objects.create(
            campaign=campaign,
            sequence=sequence,
            event="progress",
            data={"percentage": percentage, "message": "lost on the way"},
            emitted_at=timezone.now(),
        )


def hub_layer() -> Any:
    """The channel layer the process hub reads (a dedicated "realtime" layer where there is one)."""
    return getattr(realtime_layers, "realtime_layer", get_channel_layer)()


def layer_message(campaign: Campaign, stored: CampaignEvent) -> dict[str, Any]:
    """The channel-layer message ``publish`` sends for a stored event."""
    frame = event_frame(stored, campaign_public_id=campaign.public_id)
    return {
        "type": "campaign.event",
        "campaign_id": campaign.public_id,
        "sequence": stored.sequence,
        "frame": json.dumps(frame, separators=(",", ":")),
    }


async def stop_hub() -> None:
    """Stop this loop's hub inside the loop, so nothing is left running when the loop closes.

    A cancel that lands while redis-py is in the middle of a command can be swallowed (see
    test_hub_tasks_stop_when_cancelled), so keep cancelling until the tasks are really done.
    """
    await stateful.close_client()
    hub = get_fanout()
    for _ in range(200):
        pending = [task for task in hub._tasks if not task.done()]
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.05)
    await hub.slots.close()  # after the presence loop, which writes through it


async def refused(token: str, headers: list[tuple[bytes, bytes]]) -> tuple[bool, Any]:
    comm = WebsocketCommunicator(application, f"{PATH}?access_token={token}", headers=headers)
    return await comm.connect(timeout=5)
