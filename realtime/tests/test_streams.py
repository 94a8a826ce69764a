"""The account and operations streams (PROTOCOL.md §11) on the native WebSocket: the same log
machinery as campaigns (sequence per user, or global for operations; resume; no gap)."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import pytest
import websockets
from channels.db import database_sync_to_async

from accounts.models import MonthlySpend
from accounts.services import account_publish, spend_record
from campaigns.tests.factories import CampaignFactory, UserFactory
from eventlog.models import StreamEvent
from eventlog.publisher import publish_to_stream
from eventlog.services import account_stream, ops_stream
from orchestration import services
from orchestration.models import OrchestrationRun, RunState
from realtime.tests.sockets import assert_clean_error, expect_error, expect_silence, recv, token_for

db = database_sync_to_async


async def subscribe_stream(comm, stream: str, **extra) -> dict:
    await comm.send_json_to({"type": "subscribe", "stream": stream, **extra})
    answer = await recv(comm)
    assert answer["type"] == "subscribed" and answer["stream"] == stream, answer
    return answer


async def test_account_events_reach_their_user_only(ws, users):
    alice, bob = users["alice"], users["bob"]
    alice_ws, bob_ws = await ws(alice), await ws(bob)
    assert (await subscribe_stream(alice_ws, "account"))["last_sequence"] == 0
    await subscribe_stream(bob_ws, "account")
    await db(account_publish)(
        alice.pk, "run.started", {"campaign_id": "camp_x", "run_id": "run_y", "state": "planning"}
    )
    frame = await recv(alice_ws)
    assert frame == {
        "type": "event",
        "stream": "account",
        "event": "run.started",
        "sequence": 1,
        "emitted_at": frame["emitted_at"],
        "data": {"campaign_id": "camp_x", "run_id": "run_y", "state": "planning"},
    }
    await expect_silence(bob_ws)


async def test_the_ops_stream_is_for_staff_only(ws, users):
    alice_ws, operator_ws = await ws(users["alice"]), await ws(users["operator"])
    await alice_ws.send_json_to({"type": "subscribe", "stream": "ops", "request_id": "r1"})
    frame = await expect_error(alice_ws, "not_found", "r1")
    assert frame["message"] == "Stream not found."
    await subscribe_stream(operator_ws, "ops")
    await db(publish_to_stream)(
        await db(ops_stream)(), "system.alert", {"level": "warning", "message": "disk", "source": "test"}
    )
    frame = await recv(operator_ws)
    assert frame["stream"] == "ops" and frame["event"] == "system.alert" and frame["sequence"] >= 1
    await expect_silence(alice_ws)


@pytest.mark.parametrize("stream", ["accounts", "", 7, None, ["account"], {"x": 1}])
async def test_an_unknown_stream_is_a_bad_request(ws, users, stream):
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "subscribe", "stream": stream})
    assert_clean_error(await recv(comm), "bad_request")
    await comm.send_json_to({"type": "subscribe", "stream": "account", "last_sequence": -1})
    assert_clean_error(await recv(comm), "bad_request")


async def test_resume_replays_the_missed_account_events_then_unsubscribe(ws, users):
    alice = users["alice"]
    for n in range(5):
        await db(account_publish)(
            alice.pk, "run.started", {"campaign_id": "c", "run_id": f"run_{n}", "state": "planning"}
        )
    comm = await ws(alice)
    answer = await subscribe_stream(comm, "account", last_sequence=2)
    assert answer["last_sequence"] == 5
    frames = [await recv(comm) for _ in range(3)]
    assert [f["sequence"] for f in frames] == [3, 4, 5] and all(f["replayed"] for f in frames)
    await comm.send_json_to({"type": "unsubscribe", "stream": "account"})
    assert await recv(comm) == {"type": "unsubscribed", "stream": "account"}
    await comm.send_json_to({"type": "unsubscribe", "campaign_id": "account"})
    assert_clean_error(await recv(comm), "not_found")
    await db(account_publish)(alice.pk, "run.started", {"campaign_id": "c", "run_id": "run_x", "state": "planning"})
    await expect_silence(comm)


async def test_a_resume_past_the_log_gets_the_account_snapshot(ws, users):
    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    run = await db(OrchestrationRun.objects.create)(campaign=campaign, state=RunState.GENERATING)
    await db(spend_record)(user_id=alice.pk, cost=Decimal("0.25"))
    comm = await ws(alice)
    await subscribe_stream(comm, "account", last_sequence=99)
    frame = await recv(comm)
    assert frame["type"] == "snapshot" and frame["stream"] == "account" and frame["resync"] is True
    snapshot = frame["snapshot"]
    assert snapshot["spend"] == "0.250000" and snapshot["budget"] is None
    assert snapshot["active_runs"] == [
        {"campaign_id": campaign.public_id, "run_id": run.public_id, "state": "generating"}
    ]
    assert snapshot["last_event_sequence"] == 1  # the spend.updated
    await comm.send_json_to({"type": "snapshot", "stream": "account", "request_id": "s"})
    assert (await recv(comm))["snapshot"]["active_runs"] == snapshot["active_runs"]


# --- the real stack: daphne, a worker, two runs ------------------------------------------------------------


async def collect_account(sock, done, timeout: float = 90) -> list[dict]:
    """Durable account events until ``done(events)`` holds."""
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(events):
        frame = json.loads(await asyncio.wait_for(sock.recv(), max(0.01, deadline - time.monotonic())))
        if frame["type"] == "event" and frame.get("stream") == "account":
            events.append(frame)
    return events


def stored_account_log(user) -> list[tuple[int, str]]:
    return list(
        StreamEvent.objects.filter(stream=account_stream(user.pk)).order_by("sequence").values_list("sequence", "event")
    )


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
async def test_one_ordered_account_stream_across_two_campaigns_and_two_runs_resumed_after_a_drop(
    start_web, start_worker
):
    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="3")
    alice, bob = await db(UserFactory)(username="alice"), await db(UserFactory)(username="bob")
    first, second = await db(CampaignFactory)(owner=alice), await db(CampaignFactory)(owner=alice)
    url = f"{server.ws_url}/ws/campaigns/"
    sock = await websockets.connect(f"{url}?access_token={token_for(alice)}")
    bob_sock = await websockets.connect(f"{url}?access_token={token_for(bob)}")
    for each in (sock, bob_sock):
        await each.send(json.dumps({"type": "subscribe", "stream": "account"}))
        assert json.loads(await each.recv())["type"] == "subscribed"
    runs = [await db(services.run_start)(campaign=c, created_by=alice) for c in (first, second)]

    before_drop = await collect_account(sock, lambda events: len(events) >= 3)
    await sock.close()  # the connection drops mid-run; the runs go on
    sock = await websockets.connect(f"{url}?access_token={token_for(alice)}")
    last = before_drop[-1]["sequence"]
    await sock.send(json.dumps({"type": "subscribe", "stream": "account", "last_sequence": last}))
    assert json.loads(await sock.recv())["type"] == "subscribed"

    def finished(events) -> bool:
        completed = {e["data"]["run_id"] for e in before_drop + events if e["event"] == "run.completed"}
        return completed == {run.public_id for run in runs} and bool(events) and events[-1]["event"] == "spend.updated"

    after = await collect_account(sock, finished)
    spent = await db(lambda: MonthlySpend.objects.get(user=alice).spend)()
    while Decimal(after[-1]["data"]["spend"]) != spent:  # the last update may follow the runs by a second
        after += await collect_account(sock, lambda events: bool(events) and events[-1]["event"] == "spend.updated")
    await sock.close()

    received = [(e["sequence"], e["event"]) for e in before_drop + after]
    assert received == await db(stored_account_log)(alice), "one ordered stream: contiguous, nothing twice"
    assert [s for s, _ in received] == list(range(1, len(received) + 1))
    for run in runs:
        mine = [e["event"] for e in before_drop + after if e["data"].get("run_id") == run.public_id]
        assert mine == ["run.started", "run.completed"]
    assert Decimal(after[-1]["data"]["spend"]) == sum(
        [Decimal(run.cost) for run in await db(lambda: list(OrchestrationRun.objects.filter(campaign__owner=alice)))()],
        Decimal(0),
    )
    bob_frames = []
    try:
        while True:
            bob_frames.append(json.loads(await asyncio.wait_for(bob_sock.recv(), 0.5)))
    except TimeoutError:
        pass
    assert [f for f in bob_frames if f["type"] == "event"] == [], "bob sees none of alice's account"
    await bob_sock.close()


async def test_stream_and_campaign_names_never_cross_and_old_format_messages_still_arrive(ws, users):
    from eventlog.publisher import dumps
    from realtime.fanout import get_fanout
    from realtime.tests.sockets import subscribe

    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    comm = await ws(alice)
    await subscribe(comm, campaign)
    await comm.send_json_to({"type": "unsubscribe", "stream": campaign.public_id})
    assert_clean_error(await recv(comm), "not_found")
    # A message as the previous release published it (a rolling deploy): it names the campaign.
    frame = {
        "type": "event",
        "event": "progress",
        "campaign_id": campaign.public_id,
        "run_id": None,
        "sequence": 1,
        "emitted_at": "2026-12-01T00:00:00.000000Z",
        "data": {"percentage": 1, "message": "x"},
    }
    await get_fanout().dispatch(
        {"type": "campaign.event", "campaign_id": campaign.public_id, "sequence": 1, "frame": dumps(frame)}
    )
    assert (await recv(comm))["sequence"] == 1, "still subscribed, and the old message was delivered"
