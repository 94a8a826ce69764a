"""The native campaign WebSocket (PROTOCOL.md §5-7), seen from a client: the frames it gets, in order.

Events go through the real Redis channel layer and the process hub. An event published right after
a subscribe may arrive with ``"replayed": true`` (read from the log during the subscription's
catch-up); both are correct, so ``replayed`` is only asserted where the protocol demands it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections, transaction
from django.db.models import F
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from campaigns.models import Campaign
from campaigns.tests.factories import PASSWORD, ArtifactFactory, CampaignFactory, RunFactory, UserFactory
from eventlog import layer as realtime_layers
from eventlog.models import CampaignEvent
from eventlog.publisher import event_frame, group_name, publish, publish_transient
from marketing_agents.asgi import application
from orchestration.models import OrchestrationRun
from realtime.fanout import BROADCAST_GROUP, FanOut, get_fanout
from realtime.services import notice_send

pytestmark = pytest.mark.django_db(transaction=True)

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


@pytest.fixture
async def ws(transactional_db):
    """Opens WebSocket connections through the real ASGI application; disconnects them afterwards."""
    opened: list[WebsocketCommunicator] = []

    async def open_ws(
        user=None,
        *,
        token: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> WebsocketCommunicator:
        path = PATH
        if user is not None:
            token = token_for(user)
        if token is not None:
            path += f"?access_token={token}"
        comm = WebsocketCommunicator(application, path, headers=headers or [])
        opened.append(comm)
        connected, _ = await comm.connect(timeout=5)
        assert connected, "the handshake was refused"
        return comm

    yield open_ws

    for comm in opened:
        try:
            await comm.disconnect(timeout=2)
        except (Exception, asyncio.CancelledError):  # already finished, or cancelled by a receive timeout
            pass
    await stop_hub()
    await db(connections.close_all)()


async def stop_hub() -> None:
    """Stop this loop's hub inside the loop, so nothing is left running when the loop closes.

    A cancel that lands while redis-py is in the middle of a command can be swallowed (see
    test_hub_tasks_stop_when_cancelled), so keep cancelling until the tasks are really done.
    """
    hub = get_fanout()
    for _ in range(200):
        pending = [task for task in hub._tasks if not task.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.05)


async def refused(token: str, headers: list[tuple[bytes, bytes]]) -> tuple[bool, Any]:
    comm = WebsocketCommunicator(application, f"{PATH}?access_token={token}", headers=headers)
    return await comm.connect(timeout=5)


@pytest.fixture
def users(transactional_db):
    return {
        "alice": UserFactory(username="alice"),
        "bob": UserFactory(username="bob"),
        "operator": UserFactory(username="charlie", is_staff=True, is_superuser=True),
    }


# --- authentication -----------------------------------------------------------------------------------------


async def test_access_token_query_parameter_authenticates(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    answer = await subscribe(comm, campaign, request_id="r1")
    assert answer == {"type": "subscribed", "campaign_id": campaign.public_id, "last_sequence": 0, "request_id": "r1"}
    await assert_usable(comm)


async def test_authorization_bearer_header_authenticates(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    token = token_for(users["alice"])
    comm = await ws(headers=[(b"authorization", f"Bearer {token}".encode())])
    await subscribe(comm, campaign)
    await assert_usable(comm)


async def test_session_cookie_authenticates(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])

    def login() -> str:
        client = Client()
        assert client.login(username="alice", password=PASSWORD)
        return client.cookies["sessionid"].value

    session_key = await db(login)()
    comm = await ws(headers=[(b"cookie", f"csrftoken=abc; sessionid={session_key}".encode())])
    await subscribe(comm, campaign)
    await assert_usable(comm)


async def test_unknown_session_cookie_is_unauthenticated(ws, users):
    comm = await ws(headers=[(b"cookie", b"sessionid=not-a-session")])
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


async def test_no_credentials_accepted_then_unauthenticated_and_4401(ws, users):
    comm = await ws()
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


async def test_frames_of_an_unauthenticated_connection_are_not_answered(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws()
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)
    await comm.send_json_to({"type": "subscribe", "campaign_id": campaign.public_id})
    await comm.send_json_to({"type": "ping"})
    await expect_silence(comm)


async def test_garbage_token_is_unauthenticated(ws, users):
    comm = await ws(token="not.a.jwt")
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


async def test_garbage_bearer_header_is_unauthenticated(ws, users):
    comm = await ws(headers=[(b"authorization", b"Bearer garbage")])
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


async def test_refresh_token_is_not_an_access_token(ws, users):
    refresh = str(RefreshToken.for_user(users["alice"]))
    comm = await ws(token=refresh)
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


async def test_expired_token_is_token_expired(ws, users):
    comm = await ws(token=token_for(users["alice"], lifetime=-timedelta(minutes=5)))
    await expect_error(comm, "token_expired")
    await expect_close(comm, 4401)


async def test_token_expiring_during_the_connection_closes_it(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    # exp is whole seconds (truncated), so a 2 s lifetime ends 1-2 s from now: never before the handshake.
    comm = await ws(token=token_for(users["alice"], lifetime=timedelta(seconds=2)))
    await subscribe(comm, campaign)
    await assert_usable(comm)
    started = time.monotonic()
    frame = await recv(comm, timeout=5)
    assert_clean_error(frame, "token_expired")
    assert time.monotonic() - started < 3
    await expect_close(comm, 4401)


async def test_a_connection_whose_token_expired_executes_no_more_commands(ws, users):
    """After token_expired and the close, frames still in flight (the close handshake takes a moment,
    and autobahn keeps delivering frames while closing) must not act with the expired credential."""
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    comm = await ws(token=token_for(users["alice"], lifetime=timedelta(seconds=2)))
    await subscribe(comm, campaign)
    await expect_error(comm, "token_expired")
    await expect_close(comm, 4401)
    await comm.send_json_to({"type": "cancel", "run_id": run.public_id})
    await comm.send_json_to({"type": "ping"})
    await publish_progress(campaign, 1)
    after_close = await drain(comm)
    state = (await db(OrchestrationRun.objects.get)(pk=run.pk)).state
    assert (state, after_close) == ("generating", [])


async def test_deactivated_users_token_is_unauthenticated(ws, users):
    alice = users["alice"]
    token = token_for(alice)
    alice.is_active = False
    await db(alice.save)()
    comm = await ws(token=token)
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


async def test_token_of_a_deleted_user_is_unauthenticated(ws, users):
    token = token_for(users["bob"])
    await db(users["bob"].delete)()
    comm = await ws(token=token)
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


# --- origin -------------------------------------------------------------------------------------------------


async def test_foreign_origin_is_refused_with_403(ws, users):
    headers = [(b"origin", b"https://evil.example"), (b"host", b"testserver")]
    assert await refused(token_for(users["alice"]), headers) == (False, 403)


@pytest.mark.parametrize(
    "origin",
    [b"http://testserver:8080", b"null", b"http://testserver.evil.example", b"ftp://testserver", b"testserver"],
)
async def test_near_misses_of_the_own_origin_are_refused(ws, users, origin):
    headers = [(b"origin", origin), (b"host", b"testserver")]
    assert await refused(token_for(users["alice"]), headers) == (False, 403)


@pytest.mark.parametrize("origin", [b"http://testserver", b"https://testserver", b"http://testserver/"])
async def test_same_origin_is_accepted(ws, users, origin):
    comm = await ws(users["alice"], headers=[(b"origin", origin), (b"host", b"testserver")])
    await assert_usable(comm)


async def test_same_origin_with_port_is_accepted(ws, users):
    comm = await ws(users["alice"], headers=[(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")])
    await assert_usable(comm)


async def test_origin_in_allowed_origins_is_accepted(ws, users, settings):
    settings.ALLOWED_ORIGINS = ["https://app.example.com"]
    comm = await ws(users["alice"], headers=[(b"origin", b"https://app.example.com"), (b"host", b"api.example.com")])
    await assert_usable(comm)
    headers = [(b"origin", b"https://other.example.com"), (b"host", b"api.example.com")]
    assert await refused(token_for(users["alice"]), headers) == (False, 403)


async def test_no_origin_is_accepted(ws, users):
    comm = await ws(users["alice"], headers=[(b"host", b"testserver")])
    await assert_usable(comm)


async def test_allowed_origin_without_credentials_is_still_unauthenticated(ws, users):
    comm = await ws(headers=[(b"origin", b"http://testserver"), (b"host", b"testserver")])
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


# --- subscribe and resume -----------------------------------------------------------------------------------


async def test_a_subscription_whose_log_cannot_be_read_ends_the_connection_to_be_resumed(ws, users):
    """Delivery never goes on silently without events: the client is told and the socket closes
    (1011), so it reconnects and resumes from its last sequence."""
    from django.db import OperationalError, connection

    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 10)
    comm = await ws(users["alice"])

    def refuse_log_reads(execute, sql, params, many, context):
        if "campaignevent" in sql and "ORDER BY" in sql:
            raise OperationalError("the database went away")
        return execute(sql, params, many, context)

    # The consumers' queries run on the database thread; its connection starts refusing log reads.
    await db(lambda: connection.execute_wrappers.append(refuse_log_reads))()
    try:
        await comm.send_json_to({"type": "subscribe", "campaign_id": campaign.public_id})
        assert (await recv(comm))["type"] == "subscribed"
        await expect_error(comm, "internal_error")
        await expect_close(comm, 1011)
    finally:
        await db(lambda: connection.execute_wrappers.remove(refuse_log_reads))()


async def test_subscribe_answers_the_current_last_sequence_then_live_events(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 10, 20, 30)
    comm = await ws(users["alice"])
    answer = await subscribe(comm, campaign, request_id="sub-1")
    assert answer == {
        "type": "subscribed",
        "campaign_id": campaign.public_id,
        "last_sequence": 3,
        "request_id": "sub-1",
    }
    await expect_silence(comm)  # no replay without last_sequence

    await publish_progress(campaign, 40, 50)
    first, second = await receive_events(comm, 2)
    assert set(first) - {"replayed"} == EVENT_FIELDS
    assert first["event"] == "progress"
    assert first["campaign_id"] == campaign.public_id
    assert first["run_id"] is None
    assert [first["sequence"], second["sequence"]] == [4, 5]
    assert first["data"] == {"percentage": 40, "message": "at 40%"}
    assert first["emitted_at"].endswith("Z")
    await expect_silence(comm)


async def test_resume_replays_everything_after_k_in_order_then_live(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3, 4, 5)
    comm = await ws(users["alice"])
    answer = await subscribe(comm, campaign, last_sequence=2, request_id="resume")
    assert answer["last_sequence"] == 5 and answer["request_id"] == "resume"
    replayed = await receive_events(comm, 3)
    assert [f["sequence"] for f in replayed] == [3, 4, 5]
    assert all(f.get("replayed") is True for f in replayed)
    assert [f["data"]["percentage"] for f in replayed] == [3, 4, 5]

    await publish_progress(campaign, 6, 7)
    live = await receive_events(comm, 2)
    assert [f["sequence"] for f in live] == [6, 7]
    await expect_silence(comm)  # no duplicates


async def test_resume_from_zero_replays_the_whole_log(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3)
    comm = await ws(users["alice"])
    await subscribe(comm, campaign, last_sequence=0)
    assert [f["sequence"] for f in await receive_events(comm, 3)] == [1, 2, 3]
    await expect_silence(comm)


async def test_resume_from_the_current_sequence_replays_nothing(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2)
    comm = await ws(users["alice"])
    answer = await subscribe(comm, campaign, last_sequence=2)
    assert answer["last_sequence"] == 2
    await expect_silence(comm)
    await publish_progress(campaign, 3)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [3]


async def test_resume_while_events_keep_coming_has_no_gap_and_no_duplicate(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, *range(1, 21))
    comm = await ws(users["alice"])

    async def publish_more() -> None:
        await publish_progress(campaign, *range(21, 41))

    publisher = asyncio.ensure_future(publish_more())
    await subscribe(comm, campaign, last_sequence=5)
    frames = await receive_events(comm, 35, timeout=10)
    await publisher
    assert [f["sequence"] for f in frames] == list(range(6, 41))
    await expect_silence(comm)


async def test_resume_from_before_the_retained_log_gets_a_resync_snapshot(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3, 4, 5)
    await db(CampaignEvent.objects.filter(campaign=campaign, sequence__lte=3).delete)()  # retention
    comm = await ws(users["alice"])
    await subscribe(comm, campaign, last_sequence=1)
    snapshot = await recv(comm)
    assert snapshot["type"] == "snapshot", snapshot
    assert snapshot["resync"] is True
    assert snapshot["campaign_id"] == campaign.public_id
    assert set(snapshot["snapshot"]) == SNAPSHOT_FIELDS
    assert snapshot["snapshot"]["last_event_sequence"] == 5
    await expect_silence(comm)  # no replay of 4 and 5: the snapshot includes them

    await publish_progress(campaign, 6)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [6]
    await expect_silence(comm)


async def test_resume_at_the_edge_of_the_retained_log_replays(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3, 4, 5)
    await db(CampaignEvent.objects.filter(campaign=campaign, sequence__lte=3).delete)()
    comm = await ws(users["alice"])
    await subscribe(comm, campaign, last_sequence=3)  # 4 and 5 are still in the log
    frames = await receive_events(comm, 2)
    assert [f["sequence"] for f in frames] == [4, 5]
    assert all(f.get("replayed") is True for f in frames)
    await expect_silence(comm)


async def test_resume_when_the_whole_log_was_pruned_gets_a_resync_snapshot(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3)
    await db(CampaignEvent.objects.filter(campaign=campaign).delete)()
    comm = await ws(users["alice"])
    await subscribe(comm, campaign, last_sequence=1)
    snapshot = await recv(comm)
    assert snapshot["type"] == "snapshot" and snapshot["resync"] is True
    assert snapshot["snapshot"]["last_event_sequence"] == 3
    await expect_silence(comm)


async def test_resume_beyond_the_log_gets_a_resync_snapshot(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3)
    comm = await ws(users["alice"])
    answer = await subscribe(comm, campaign, last_sequence=99)
    assert answer["last_sequence"] == 3
    snapshot = await recv(comm)
    assert snapshot["type"] == "snapshot" and snapshot["resync"] is True
    assert snapshot["snapshot"]["last_event_sequence"] == 3
    await expect_silence(comm)
    await publish_progress(campaign, 4)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [4]


async def test_subscribing_twice_to_a_campaign_does_not_duplicate_events(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await subscribe(comm, campaign)
    await publish_progress(campaign, 1)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [1]
    await expect_silence(comm)


# --- unsubscribe --------------------------------------------------------------------------------------------


async def test_unsubscribe_stops_the_events(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await publish_progress(campaign, 1)
    await receive_events(comm, 1)
    await comm.send_json_to({"type": "unsubscribe", "campaign_id": campaign.public_id, "request_id": "u1"})
    assert await recv(comm) == {"type": "unsubscribed", "campaign_id": campaign.public_id, "request_id": "u1"}
    await publish_progress(campaign, 2)
    await expect_silence(comm, 1.0)
    await assert_usable(comm)


async def test_unsubscribe_from_a_campaign_not_subscribed_is_not_found(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "unsubscribe", "campaign_id": campaign.public_id, "request_id": "u2"})
    await expect_error(comm, "not_found", "u2")
    await comm.send_json_to({"type": "unsubscribe", "campaign_id": "camp_nothing"})
    await expect_error(comm, "not_found")
    await comm.send_json_to({"type": "unsubscribe"})
    await expect_error(comm, "bad_request")
    await assert_usable(comm)


async def test_unsubscribing_one_connection_keeps_the_others_subscribed(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    first, second = await ws(users["alice"]), await ws(users["alice"])
    await subscribe(first, campaign)
    await subscribe(second, campaign)
    await first.send_json_to({"type": "unsubscribe", "campaign_id": campaign.public_id})
    assert (await recv(first))["type"] == "unsubscribed"
    await publish_progress(campaign, 1)
    assert [f["sequence"] for f in await receive_events(second, 1)] == [1]
    await expect_silence(first)


# --- snapshot -----------------------------------------------------------------------------------------------


async def test_snapshot_frame_has_the_section_6_fields(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating", steps={"Copy": "completed"})
    artifact = await db(ArtifactFactory)(run=run, type="Copy")
    await publish_progress(campaign, 25, 50)
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "snapshot", "campaign_id": campaign.public_id, "request_id": "s1"})
    frame = await recv(comm)
    assert frame["type"] == "snapshot"
    assert frame["campaign_id"] == campaign.public_id
    assert frame["request_id"] == "s1"
    assert "resync" not in frame
    snapshot = frame["snapshot"]
    assert set(snapshot) == SNAPSHOT_FIELDS
    assert snapshot["campaign_id"] == campaign.public_id
    assert snapshot["run_id"] == run.public_id
    assert snapshot["current_state"] == "generating"
    assert snapshot["completed_artifacts"] == ["Copy"]
    assert snapshot["pending_artifacts"] == ["ShortCopy", "Visual"]
    assert snapshot["audit_status"] == "not_started"
    assert snapshot["last_event_sequence"] == 2
    assert snapshot["compliance"] is None
    assert isinstance(snapshot["timestamp"], str) and snapshot["timestamp"].endswith("Z")
    [payload] = snapshot["artifacts"]
    assert set(payload) == ARTIFACT_FIELDS
    assert payload["id"] == artifact.public_id and payload["type"] == "Copy"
    await expect_silence(comm)  # a snapshot does not subscribe


async def test_snapshot_of_a_campaign_without_runs(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "snapshot", "campaign_id": campaign.public_id})
    frame = await recv(comm)
    assert "request_id" not in frame
    snapshot = frame["snapshot"]
    assert snapshot["run_id"] is None and snapshot["current_state"] == "idle"
    assert snapshot["completed_artifacts"] == [] and snapshot["artifacts"] == []
    assert snapshot["last_event_sequence"] == 0


async def test_snapshot_without_campaign_id_is_bad_request(ws, users):
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "snapshot", "request_id": "s2"})
    await expect_error(comm, "bad_request", "s2")
    await assert_usable(comm)


# --- cancel -------------------------------------------------------------------------------------------------


async def test_cancel_a_running_run(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    comm = await ws(users["alice"])
    watcher = await ws(users["operator"])  # another subscriber of the campaign
    await subscribe(comm, campaign)
    await subscribe(watcher, campaign)
    await comm.send_json_to({"type": "cancel", "run_id": run.public_id, "request_id": "c1"})

    frames = [await recv(comm) for _ in range(3)]  # the ack, orchestration.state_changed, run.cancelled
    acks = [f for f in frames if f["type"] == "cancellation_ack"]
    assert acks == [{"type": "cancellation_ack", "run_id": run.public_id, "request_id": "c1"}]
    events = [f for f in frames if f["type"] == "event"]
    assert [f["event"] for f in events] == ["orchestration.state_changed", "run.cancelled"]
    assert [f["sequence"] for f in events] == [1, 2]
    cancelled = events[-1]
    assert cancelled["run_id"] == run.public_id
    assert cancelled["data"] == {"run_id": run.public_id, "requested_by": "alice"}

    watched = await receive_events(watcher, 2)
    assert [f["event"] for f in watched] == ["orchestration.state_changed", "run.cancelled"]
    await expect_silence(comm)
    await expect_silence(watcher, 0.1)
    assert (await db(OrchestrationRun.objects.get)(pk=run.pk)).state == "cancelled"


async def test_cancel_a_finished_run_is_a_readable_bad_request(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="completed")
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "cancel", "run_id": run.public_id, "request_id": "c2"})
    frame = await expect_error(comm, "bad_request", "c2")
    assert "completed" in frame["message"] and "cancel" in frame["message"]
    await assert_usable(comm)


async def test_cancel_an_unknown_or_foreign_run_is_not_found(ws, users):
    bobs_campaign = await db(CampaignFactory)(owner=users["bob"])
    bobs_run = await db(RunFactory)(campaign=bobs_campaign, state="generating")
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "cancel", "run_id": "run_doesnotexist", "request_id": "c3"})
    unknown = await expect_error(comm, "not_found", "c3")
    await comm.send_json_to({"type": "cancel", "run_id": bobs_run.public_id, "request_id": "c4"})
    foreign = await expect_error(comm, "not_found", "c4")
    assert unknown["message"] == foreign["message"]  # nothing tells the two apart
    await comm.send_json_to({"type": "cancel", "run_id": 12})
    await expect_error(comm, "bad_request")
    await comm.send_json_to({"type": "cancel"})
    await expect_error(comm, "bad_request")
    await assert_usable(comm)
    assert (await db(OrchestrationRun.objects.get)(pk=bobs_run.pk)).state == "generating"


# --- ping, several campaigns --------------------------------------------------------------------------------


async def test_ping_pong_echoes_request_id(ws, users):
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "ping", "request_id": "p-1"})
    assert await recv(comm) == {"type": "pong", "request_id": "p-1"}
    await comm.send_json_to({"type": "ping"})
    assert await recv(comm) == {"type": "pong"}


async def test_several_campaigns_on_one_connection(ws, users):
    first = await db(CampaignFactory)(owner=users["alice"])
    second = await db(CampaignFactory)(owner=users["alice"])
    third = await db(CampaignFactory)(owner=users["alice"])  # not subscribed
    await publish_progress(second, 1)
    comm = await ws(users["alice"])
    await subscribe(comm, first)
    assert (await subscribe(comm, second))["last_sequence"] == 1
    await publish_progress(first, 10)
    await publish_progress(third, 30)
    await publish_progress(second, 20)
    await publish_progress(first, 11)
    frames = await receive_events(comm, 3)
    by_campaign: dict[str, list[int]] = {}
    for frame in frames:
        by_campaign.setdefault(frame["campaign_id"], []).append(frame["sequence"])
    assert by_campaign == {first.public_id: [1, 2], second.public_id: [2]}
    await expect_silence(comm)


# --- authorization ------------------------------------------------------------------------------------------


async def test_another_users_campaign_is_not_found_like_a_missing_one(ws, users):
    alices = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["bob"])
    await comm.send_json_to({"type": "subscribe", "campaign_id": alices.public_id, "request_id": "a"})
    foreign = await expect_error(comm, "not_found", "a")
    await comm.send_json_to({"type": "subscribe", "campaign_id": "camp_doesnotexist", "request_id": "b"})
    missing = await expect_error(comm, "not_found", "b")
    assert foreign["message"] == missing["message"]
    await comm.send_json_to({"type": "snapshot", "campaign_id": alices.public_id, "request_id": "c"})
    await expect_error(comm, "not_found", "c")
    await comm.send_json_to({"type": "subscribe", "campaign_id": alices.public_id, "last_sequence": 0})
    await expect_error(comm, "not_found")
    await publish_progress(alices, 1)
    await expect_silence(comm)


async def test_staff_can_subscribe_to_any_campaign(ws, users):
    alices = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(alices, 1)
    comm = await ws(users["operator"])
    assert (await subscribe(comm, alices))["last_sequence"] == 1
    await publish_progress(alices, 2)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [2]
    await comm.send_json_to({"type": "snapshot", "campaign_id": alices.public_id})
    assert (await recv(comm))["snapshot"]["last_event_sequence"] == 2


# --- bad frames ---------------------------------------------------------------------------------------------


BAD_TEXT_FRAMES = [
    ("not json", "bad_request"),
    ("{'type': 'ping'}", "bad_request"),
    ("", "bad_request"),
    ("[1, 2]", "bad_request"),
    ('[{"type": "ping"}]', "bad_request"),
    ("42", "bad_request"),
    ("4.2", "bad_request"),
    ('"ping"', "bad_request"),
    ("null", "bad_request"),
    ("true", "bad_request"),
    ("{}", "bad_request"),
    ('{"request_id": "x"}', "bad_request"),
    ('{"type": 5}', "bad_request"),
    ('{"type": null}', "bad_request"),
    ('{"type": ["ping"]}', "bad_request"),
    ('{"type": {"name": "ping"}}', "bad_request"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": ""}', "unknown_type"),
    ('{"type": "PING"}', "unknown_type"),
    ('{"type": "__init__"}', "unknown_type"),
    ('{"type": "subscribed"}', "unknown_type"),
    ('{"type": "' + "x" * 5000 + '"}', "unknown_type"),
    ('{"type": "subscribe"}', "bad_request"),
    ('{"type": "subscribe", "campaign_id": 5}', "bad_request"),
    ('{"type": "subscribe", "campaign_id": null}', "bad_request"),
    ('{"type": "subscribe", "campaign_id": ["camp_x"]}', "bad_request"),
    ('{"type": "ping", "request_id": 5}', "bad_request"),
    ('{"type": "ping", "request_id": {"id": "x"}}', "bad_request"),
]


async def test_bad_text_frames_get_an_error_and_the_connection_stays_usable(ws, users):
    comm = await ws(users["alice"])
    for text, code in BAD_TEXT_FRAMES:
        await send_raw(comm, text=text)
        frame = await expect_error(comm, code)
        assert len(frame["message"]) < 500, "the message echoes the frame"
        await assert_usable(comm)


@pytest.mark.parametrize("last_sequence", [-1, "5", True, False, 1.5, 2.0, [], {}])
async def test_subscribe_with_a_bad_last_sequence_is_bad_request(ws, users, last_sequence):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await comm.send_json_to(
        {"type": "subscribe", "campaign_id": campaign.public_id, "last_sequence": last_sequence, "request_id": "ls"}
    )
    await expect_error(comm, "bad_request", "ls")
    await assert_usable(comm)
    await publish_progress(campaign, 1)
    await expect_silence(comm)  # the refused subscribe did not subscribe


async def test_errors_echo_a_string_request_id(ws, users):
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "dance", "request_id": "r-unknown"})
    await expect_error(comm, "unknown_type", "r-unknown")
    await comm.send_json_to({"type": "subscribe", "request_id": "r-missing"})
    await expect_error(comm, "bad_request", "r-missing")
    await comm.send_json_to({"type": "subscribe", "campaign_id": "camp_nope", "request_id": "r-nf"})
    await expect_error(comm, "not_found", "r-nf")


async def test_binary_frames_are_bad_request(ws, users):
    comm = await ws(users["alice"])
    for data in (b'{"type": "ping"}', b"\x00\xff\xfe", b""):
        await send_raw(comm, data=data)
        await expect_error(comm, "bad_request")
        await assert_usable(comm)


async def test_deeply_nested_json_is_bad_request_not_internal_error(ws, users):
    """A frame nested deeper than the JSON decoder's recursion limit is the client's fault."""
    comm = await ws(users["alice"])
    await comm.send_to(text_data="[" * 5000 + "]" * 5000)
    await expect_error(comm, "bad_request")
    await assert_usable(comm)
    await comm.send_to(text_data='{"type": "ping", "x": ' + "[" * 3000 + "]" * 3000 + "}")
    frame = await recv(comm)
    assert frame["type"] != "error" or frame["code"] == "bad_request", frame
    await assert_usable(comm)


# --- limits -------------------------------------------------------------------------------------------------


async def test_a_frame_of_exactly_the_limit_is_accepted(ws, users):
    comm = await ws(users["alice"])
    head = '{"type": "ping", "request_id": "big", "pad": "'
    text = head + "x" * (100 * 1024 - len(head) - 2) + '"}'
    assert len(text.encode()) == 100 * 1024
    await comm.send_to(text_data=text)
    assert await recv(comm) == {"type": "pong", "request_id": "big"}


async def test_a_frame_over_100_kb_is_message_too_large_then_1009(ws, users):
    comm = await ws(users["alice"])
    await comm.send_to(text_data='{"type": "ping", "pad": "' + "x" * (100 * 1024) + '"}')
    await expect_error(comm, "message_too_large")
    await expect_close(comm, 1009)


async def test_the_frame_limit_counts_bytes_not_characters(ws, users):
    comm = await ws(users["alice"])
    await comm.send_to(text_data='{"type": "ping", "pad": "' + "é" * 60 * 1024 + '"}')  # 60 K chars, 120 KB
    await expect_error(comm, "message_too_large")
    await expect_close(comm, 1009)


async def test_more_than_100_frames_a_second_is_rate_limited_once(ws, users, clock):
    comm = await ws(users["alice"])
    clock.advance(1.05)  # the next frame opens a fresh one-second window
    for i in range(110):
        await comm.send_json_to({"type": "ping", "request_id": f"p{i}"})
    for i in range(100):
        assert await recv(comm) == {"type": "pong", "request_id": f"p{i}"}
    await expect_error(comm, "rate_limited")
    await expect_silence(comm)  # the ten extra frames are not answered, and the error comes once
    clock.advance(1.05)
    await assert_usable(comm)


async def test_keeping_up_the_flood_closes_with_1008(ws, users, clock):
    comm = await ws(users["alice"])
    clock.advance(1.05)
    for i in range(400):
        await comm.send_json_to({"type": "ping", "request_id": f"p{i}"})
    for i in range(100):
        assert await recv(comm) == {"type": "pong", "request_id": f"p{i}"}
    await expect_error(comm, "rate_limited")
    await expect_close(comm, 1008)
    # Nothing but (repeated) close messages after that: no frame is answered any more.
    assert all(output["type"] == "websocket.close" for output in await drain(comm, 0.3))


async def test_bursts_separated_by_quiet_seconds_are_not_closed(ws, users, clock):
    """Only a flood that goes on (three seconds in a row) closes the connection; a burst now and then
    gets rate_limited each time, and the connection stays open."""
    comm = await ws(users["alice"])
    for burst in range(3):
        clock.advance(2.2)  # at least one whole quiet second between the bursts
        for i in range(105):
            await comm.send_json_to({"type": "ping", "request_id": f"b{burst}-{i}"})
        for i in range(100):
            frame = await recv(comm)
            assert frame == {"type": "pong", "request_id": f"b{burst}-{i}"}, (burst, frame)
        await expect_error(comm, "rate_limited")
        await expect_silence(comm, 0.2)
    clock.advance(1.05)
    await assert_usable(comm)


async def test_the_eleventh_subscription_is_too_many(ws, users):
    campaigns = [await db(CampaignFactory)(owner=users["alice"]) for _ in range(11)]
    comm = await ws(users["alice"])
    for campaign in campaigns[:10]:
        await subscribe(comm, campaign)
    await comm.send_json_to({"type": "subscribe", "campaign_id": campaigns[10].public_id, "request_id": "11"})
    await expect_error(comm, "too_many_subscriptions", "11")
    await subscribe(comm, campaigns[3])  # re-subscribing one already held is not an extra subscription
    await publish_progress(campaigns[10], 1)
    await expect_silence(comm)
    # Unsubscribing frees a place.
    await comm.send_json_to({"type": "unsubscribe", "campaign_id": campaigns[0].public_id})
    assert (await recv(comm))["type"] == "unsubscribed"
    await subscribe(comm, campaigns[10])
    await publish_progress(campaigns[10], 2)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [2]


async def test_the_subscription_limit_follows_the_setting(ws, users, settings):
    settings.WS_MAX_SUBSCRIPTIONS = 2
    campaigns = [await db(CampaignFactory)(owner=users["alice"]) for _ in range(3)]
    comm = await ws(users["alice"])
    await subscribe(comm, campaigns[0])
    await subscribe(comm, campaigns[1])
    await comm.send_json_to({"type": "subscribe", "campaign_id": campaigns[2].public_id})
    frame = await expect_error(comm, "too_many_subscriptions")
    assert "2" in frame["message"]
    await assert_usable(comm)


# --- gap filling --------------------------------------------------------------------------------------------


async def test_a_lost_layer_message_is_filled_from_the_log(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await publish_progress(campaign, 1)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [1]

    lost = await db(insert_silently)(campaign, 2)
    assert lost.sequence == 2
    await expect_silence(comm, 0.3)  # nothing announced it
    await publish_progress(campaign, 3)
    missing, live = await receive_events(comm, 2)
    assert [missing["sequence"], live["sequence"]] == [2, 3]
    assert missing["replayed"] is True
    assert missing["data"] == {"percentage": 2, "message": "lost on the way"}
    assert live["data"]["percentage"] == 3
    await expect_silence(comm)


async def test_a_stranded_event_arrives_without_any_later_event(ws, users, settings):
    """Its layer message was lost and nothing follows it (the run's last event, say): the head check
    finds the subscription behind and fills it from the log."""
    from realtime.metrics import GAP_FILLS

    settings.REALTIME_HEAD_CHECK_SECONDS = 0.1
    before = GAP_FILLS.labels("head_check")._value.get()
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await publish_progress(campaign, 1)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [1]
    await db(insert_silently)(campaign, 2)
    [stranded] = await receive_events(comm, 1, timeout=10)
    assert stranded["sequence"] == 2 and stranded["replayed"] is True
    assert GAP_FILLS.labels("head_check")._value.get() == before + 1
    await expect_silence(comm)


def test_one_query_reads_the_heads_of_every_subscribed_campaign(users, django_assert_num_queries):
    from eventlog.reads import read_heads

    campaigns = [CampaignFactory(owner=users["alice"]) for _ in range(5)]
    for campaign in campaigns[:2]:
        insert_silently(campaign, 1)
    with django_assert_num_queries(1):
        heads = read_heads([c.pk for c in campaigns])
    assert heads == {c.pk: (1 if i < 2 else 0) for i, c in enumerate(campaigns)}


async def test_several_lost_messages_are_filled_in_order(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    for percentage in (1, 2, 3):
        await db(insert_silently)(campaign, percentage)
    await publish_progress(campaign, 4, 5)
    frames = await receive_events(comm, 5)
    assert [f["sequence"] for f in frames] == [1, 2, 3, 4, 5]
    assert all(f.get("replayed") is True for f in frames[:3])
    await expect_silence(comm)


async def test_a_duplicate_layer_message_is_not_delivered_twice(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    [stored] = await publish_progress(campaign, 1)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [1]

    message = layer_message(campaign, stored)
    await get_fanout().dispatch(dict(message))  # the same message handed to the hub again
    await hub_layer().group_send(group_name(campaign.public_id), dict(message))  # and through Redis
    await expect_silence(comm, 0.5)

    await publish_progress(campaign, 2)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [2]
    await expect_silence(comm)


async def test_a_message_ahead_of_the_log_is_not_delivered_before_its_predecessors(ws, users):
    """A layer message for a sequence the log does not have yet must not jump the queue."""
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    [first] = await publish_progress(campaign, 1)
    await receive_events(comm, 1)
    ahead = layer_message(campaign, first)
    ahead["sequence"] = 3
    ahead["frame"] = ahead["frame"].replace('"sequence":1', '"sequence":3')
    await get_fanout().dispatch(ahead)
    await publish_progress(campaign, 2)
    frames = await receive_events(comm, 1)
    assert [f["sequence"] for f in frames] == [2]
    await publish_progress(campaign, 3)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [3]
    await expect_silence(comm)


async def test_a_chunk_placed_after_a_lost_event_comes_after_it(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await db(insert_silently)(campaign, 1)
    chunk_data = {"artifact_type": "Copy", "chunk": "Hello", "chunk_index": 0, "is_complete": False}
    await db(publish_transient)(campaign, "artifact.chunk", chunk_data)
    missing, chunk = await receive_events(comm, 2)
    assert missing["sequence"] == 1 and missing["replayed"] is True
    assert chunk["event"] == "artifact.chunk" and chunk["after_sequence"] == 1 and "sequence" not in chunk
    await publish_progress(campaign, 2)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [2]
    await expect_silence(comm)


def fill_log(campaign: Campaign, count: int) -> None:
    now = timezone.now()
    CampaignEvent.objects.bulk_create(
        CampaignEvent(
            campaign=campaign, sequence=n, event="progress", data={"percentage": n % 100, "message": ""}, emitted_at=now
        )
        for n in range(1, count + 1)
    )
    Campaign.objects.filter(pk=campaign.pk).update(last_sequence=count)


async def test_a_long_replay_crosses_log_pages_without_gap(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await db(fill_log)(campaign, 1234)
    comm = await ws(users["alice"])
    assert (await subscribe(comm, campaign, last_sequence=100))["last_sequence"] == 1234
    await publish_progress(campaign, 1)
    frames = await receive_events(comm, 1135, timeout=10)
    assert [f["sequence"] for f in frames] == list(range(101, 1236))
    assert all(f.get("replayed") is True for f in frames[:-1])
    await expect_silence(comm)


# --- transient chunks ---------------------------------------------------------------------------------------


async def test_transient_chunks_carry_after_sequence_and_no_sequence(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await publish_progress(campaign, 10)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [1]
    chunk_data = {"artifact_type": "Copy", "chunk": "Meet the", "chunk_index": 0, "is_complete": False}
    await db(publish_transient)(campaign, "artifact.chunk", chunk_data, run_id=run.public_id)
    [chunk] = await receive_events(comm, 1)
    assert "sequence" not in chunk
    assert "replayed" not in chunk
    assert chunk["after_sequence"] == 1
    assert chunk["event"] == "artifact.chunk"
    assert chunk["run_id"] == run.public_id
    assert chunk["data"] == chunk_data
    await publish_progress(campaign, 20)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [2]


async def test_transient_chunks_are_never_replayed(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 10)
    chunk_data = {"artifact_type": "Copy", "chunk": "x", "chunk_index": 0, "is_complete": True}
    await db(publish_transient)(campaign, "artifact.chunk", chunk_data)
    await publish_progress(campaign, 20)
    comm = await ws(users["alice"])
    await subscribe(comm, campaign, last_sequence=0)
    frames = await receive_events(comm, 2)
    assert [f["sequence"] for f in frames] == [1, 2]
    await expect_silence(comm)


# --- system notices -----------------------------------------------------------------------------------------


async def test_system_notice_reaches_every_connected_client(ws, users):
    alice, bob = await ws(users["alice"]), await ws(users["bob"])
    await assert_usable(alice)  # the session is set up (see the handshake test below)
    await assert_usable(bob)
    await db(notice_send)(level="warning", message="Maintenance at noon", sent_by=None)
    for comm in (alice, bob):
        frame = await recv(comm)
        assert set(frame) == {"type", "level", "message", "emitted_at"}
        assert frame["type"] == "system.notice"
        assert frame["level"] == "warning"
        assert frame["message"] == "Maintenance at noon"
        assert frame["emitted_at"].endswith("Z")
        await expect_silence(comm, 0.2)


async def test_at_shutdown_every_client_is_told_to_reconnect_and_newcomers_too(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    alice, bob = await ws(users["alice"]), await ws(users["bob"])
    await subscribe(alice, campaign)
    await assert_usable(bob)
    await get_fanout().close_all(timeout=0.5)  # what marketing_agents.serve does when daphne stops
    for comm in (alice, bob):
        await expect_close(comm, 1001)  # going away
    late = await ws(users["alice"])  # accepted during the shutdown window, then sent on its way
    await expect_close(late, 1001)


async def test_system_notice_is_not_sent_to_refused_connections(ws, users):
    anonymous = await ws()
    await expect_error(anonymous, "unauthenticated")
    await expect_close(anonymous, 4401)
    alice = await ws(users["alice"])
    await assert_usable(alice)
    await db(notice_send)(level="info", message="Hello", sent_by=None)
    assert (await recv(alice))["type"] == "system.notice"
    await expect_silence(anonymous, 0.3)


async def test_a_notice_sent_right_after_the_handshake_reaches_the_client(ws, users):
    """Once the handshake is accepted the client is connected, and a notice sent from then on reaches it.

    The first connection of a process starts the hub, which joins the broadcast group only after the
    consumer has accepted the socket, so a notice published in between is lost for that client. With
    Redis on the same machine the window is a few milliseconds (the test is then flaky); here Redis is
    made 50 ms away for group_add, as it is when it runs on another host.
    """
    layer = hub_layer()
    group_add = layer.group_add

    async def distant_group_add(group: str, channel: str) -> None:
        await asyncio.sleep(0.05)
        await group_add(group, channel)

    layer.group_add = distant_group_add  # an instance attribute over the class's (or __getattr__'s)
    try:
        comm = await ws(users["alice"])
        await db(notice_send)(level="info", message="Hello", sent_by=None)
        frames = await drain(comm, 1.0)
    finally:
        del layer.group_add
    assert [frame.get("type") for frame in frames] == ["system.notice"]


# --- REST ---------------------------------------------------------------------------------------------------


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


async def test_post_notice_as_staff_reaches_clients(ws, users):
    alice, bob = await ws(users["alice"]), await ws(users["bob"])
    await assert_usable(alice)
    await assert_usable(bob)
    response = await db(api_for(users["operator"]).post)(
        "/api/notices/", {"level": "critical", "message": "  Deploy in 5 minutes  "}, format="json"
    )
    assert response.status_code == 202, response.content
    assert response.json()["level"] == "critical"
    for comm in (alice, bob):
        frame = await recv(comm)
        assert frame["type"] == "system.notice"
        assert frame["level"] == "critical"
        assert frame["message"] == "Deploy in 5 minutes"


async def test_post_notice_as_non_staff_is_403_and_sends_nothing(ws, users):
    alice = await ws(users["alice"])
    await assert_usable(alice)
    response = await db(api_for(users["bob"]).post)("/api/notices/", {"level": "info", "message": "hi"}, format="json")
    assert response.status_code == 403
    anonymous = await db(APIClient().post)("/api/notices/", {"level": "info", "message": "hi"}, format="json")
    assert anonymous.status_code == 401
    await expect_silence(alice)


@pytest.mark.parametrize(
    "body",
    [
        {"level": "panic", "message": "x"},
        {"level": "info"},
        {"message": "x"},
        {"level": "info", "message": ""},
        {"level": "info", "message": "x" * 1001},
        {"level": 1, "message": "x"},
        {"level": "info", "message": "   "},
        {"level": "info", "message": "a\x00b"},
    ],
)
def test_post_notice_with_a_bad_body_is_400(users, body):
    response = api_for(users["operator"]).post("/api/notices/", body, format="json")
    assert response.status_code == 400, response.content


async def test_ops_realtime_for_staff(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    process_id = get_fanout().process_id
    overview: dict[str, Any] = {}
    for _ in range(50):
        response = await db(api_for(users["operator"]).get)("/api/ops/realtime/")
        assert response.status_code == 200
        overview = response.json()
        if any(p["process"] == process_id for p in overview["processes"]):
            break
        await asyncio.sleep(0.1)
    assert {"processes", "connections", "campaigns"} <= set(overview)
    assert isinstance(overview["connections"], int) and overview["connections"] >= 1
    assert isinstance(overview["campaigns"], list)
    mine = [p for p in overview["processes"] if p["process"] == process_id]
    assert mine, overview
    assert {"process", "connections", "subscriptions", "updated_at"} <= set(mine[0])


def test_ops_realtime_is_staff_only(users):
    assert api_for(users["alice"]).get("/api/ops/realtime/").status_code == 403
    assert APIClient().get("/api/ops/realtime/").status_code == 401


async def metric_samples() -> dict[str, float]:
    """Every sample /metrics answers, keyed by its name and labels."""
    response = await db(Client().get)("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


async def test_metrics_count_what_the_connections_do(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    before = await metric_samples()
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await publish_progress(campaign, 1)
    await receive_events(comm, 1)
    await db(insert_silently)(campaign, 2)  # stored but never sent live: a gap
    await publish_progress(campaign, 3)
    await receive_events(comm, 2)
    await db(publish_transient)(campaign, "artifact.chunk", {"artifact_type": "Copy", "chunk": "a", "chunk_index": 0})
    await recv(comm)
    await comm.send_json_to({"type": "snapshot", "campaign_id": campaign.public_id})
    await recv(comm)
    await comm.send_json_to({"type": "dance"})
    await expect_error(comm, "unknown_type")
    after = await metric_samples()

    def grew(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert after['realtime_connections{protocol="native"}'] >= 1
    assert grew('realtime_events_published_total{event="progress"}') == 2  # insert_silently publishes nothing
    assert grew('realtime_events_published_total{event="artifact.chunk"}') == 1
    # 2 (lost live) and 3 (held behind it) come from the log; 1 too if it arrived during the subscribe.
    assert grew('realtime_gap_events_total{action="replayed"}') in (2, 3)
    assert grew('realtime_errors_total{code="unknown_type"}') == 1
    assert grew("realtime_snapshot_seconds_count") == 1
    assert grew("realtime_event_delivery_seconds_count") == 2
    assert grew("realtime_outbound_message_bytes_count") == 2
    assert not any(campaign.public_id in key for key in after)  # campaign ids are never label values


async def test_hub_tasks_stop_when_cancelled(transactional_db):
    """FanOut.cancel_tasks() must stop the hub's tasks whatever they are awaiting.

    redis-py's asyncio client can swallow a CancelledError that lands in the middle of a command
    (here: the presence task's first SET, while it connects); the task then sleeps and loops on, and
    a loop that waits for it on shutdown (asyncio.Runner, pytest-asyncio) never finishes.
    """
    lost = []
    for attempt in range(80):  # cancel 0-10 ms after the start: some cancels land mid-command
        hub = FanOut()
        await hub._start()
        await asyncio.sleep(attempt * 0.000125)
        hub.cancel_tasks()
        _, pending = await asyncio.wait(hub._tasks, timeout=0.5)
        lost.extend(repr(task) for task in pending)
        for _ in range(100):  # clean up whatever survived, so the loop can close
            pending = [task for task in hub._tasks if not task.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.05)
        await hub_layer().group_discard(BROADCAST_GROUP, hub.channel)
    assert not lost, f"{len(lost)} hub task(s) ignored cancel_tasks(): {lost[:3]}"


# --- fuzzing ------------------------------------------------------------------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def check_answer(frame: Any) -> None:
    assert isinstance(frame, dict), frame
    assert isinstance(frame.get("type"), str), frame
    if frame["type"] == "error":
        assert_clean_error(frame)
        assert frame["code"] != "internal_error", frame


def test_fuzzed_frames_never_break_the_connection(users, settings, caplog):
    """Random frames from bob: answers are well-formed, alice, subscribed to her campaign, sees nothing,
    and nothing is logged as an error (a client's mistake is never a traceback)."""
    settings.WS_MAX_FRAMES_PER_SECOND = 1_000_000  # hypothesis sends faster than a person would
    alices = CampaignFactory(owner=users["alice"])
    alices_run = RunFactory(campaign=alices, state="generating")
    bobs = CampaignFactory(owner=users["bob"])
    bobs_run = RunFactory(campaign=bobs, state="generating")
    known_ids = [alices.public_id, bobs.public_id, alices_run.public_id, bobs_run.public_id, "camp_missing"]
    ids = st.sampled_from(known_ids) | json_values
    command_frames = st.fixed_dictionaries(
        {"type": st.sampled_from(COMMANDS)},
        optional={
            "campaign_id": ids,
            "run_id": ids,
            "last_sequence": st.integers(min_value=-3, max_value=10**20) | json_values,
            "request_id": st.text(max_size=20) | json_values,
            "extra": json_values,
        },
    )
    fuzz = hypothesis_settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))

    with asyncio.Runner() as runner:

        async def connect(user) -> WebsocketCommunicator:
            comm = WebsocketCommunicator(application, f"{PATH}?access_token={token_for(user)}")
            assert (await comm.connect(timeout=5))[0]
            return comm

        async def setup() -> tuple[WebsocketCommunicator, WebsocketCommunicator]:
            watcher, fuzzer = await connect(users["alice"]), await connect(users["bob"])
            await subscribe(watcher, alices)
            return watcher, fuzzer

        watcher, fuzzer = runner.run(setup())
        answers: list[dict[str, Any]] = []

        async def exchange(text: str | None = None, data: bytes | None = None) -> None:
            await send_raw(fuzzer, text=text, data=data)
            marker = "fuzz-" + uuid.uuid4().hex
            await fuzzer.send_json_to({"type": "ping", "request_id": marker})
            while True:
                frame = json.loads(await fuzzer.receive_from(timeout=5))
                check_answer(frame)
                answers.append(frame)
                if frame == {"type": "pong", "request_id": marker}:
                    return

        @fuzz
        @given(st.text())
        def random_text(text: str) -> None:
            runner.run(exchange(text=text))

        @fuzz
        @given(st.binary())
        def random_bytes(data: bytes) -> None:
            runner.run(exchange(data=data))

        @fuzz
        @given(json_values)
        def random_json(value: Any) -> None:
            runner.run(exchange(text=json.dumps(value)))

        @fuzz
        @given(command_frames)
        def random_commands(frame: dict[str, Any]) -> None:
            runner.run(exchange(text=json.dumps(frame)))

        random_text()
        random_bytes()
        random_json()
        random_commands()

        async def finish() -> None:
            await assert_usable(fuzzer)
            while not await fuzzer.receive_nothing(timeout=0.3):
                check_answer(json.loads(await fuzzer.receive_from()))
            await expect_silence(watcher, 0.5)  # nothing the fuzzer did reached alice's campaign
            await fuzzer.disconnect()
            await watcher.disconnect()
            await stop_hub()
            await db(connections.close_all)()

        runner.run(finish())

    assert any(a["type"] == "error" for a in answers)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    for answer in answers:
        if answer.get("campaign_id") is not None:
            assert answer["campaign_id"] != alices.public_id, answer
        if answer["type"] == "cancellation_ack":
            assert answer["run_id"] == bobs_run.public_id
    alices_run.refresh_from_db()
    assert alices_run.state == "generating"
    assert not CampaignEvent.objects.filter(campaign=alices).exists()
