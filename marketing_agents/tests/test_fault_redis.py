"""Redis fails under a running product (PROTOCOL.md §9): real daphne, a real Celery worker, and a
redis-server of the test's own that is killed and started again, empty or with its data."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets
from channels.db import database_sync_to_async
from rest_framework_simplejwt.tokens import AccessToken

from campaigns.tests.factories import CampaignFactory, UserFactory
from eventlog.models import CampaignEvent
from marketing_agents.tests.processes import RedisServer
from orchestration.models import Artifact, OrchestrationRun
from realtime.tests.test_signalr_client import node_clients  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

db = database_sync_to_async


@pytest.fixture
def redis_server(tmp_path):
    servers = []

    def start(**options) -> RedisServer:
        server = RedisServer(tmp_path, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def bearer(user) -> dict[str, str]:
    return {"Authorization": f"Bearer {AccessToken.for_user(user)}"}


async def watch(server, user, campaign_id: str, **subscribe_extra):
    ws = await websockets.connect(f"{server.ws_url}/ws/campaigns/?access_token={AccessToken.for_user(user)}")
    await ws.send(json.dumps({"type": "subscribe", "campaign_id": campaign_id, **subscribe_extra}))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert answer["type"] == "subscribed", answer
    return ws


async def next_event(ws, timeout: float) -> dict:
    """The next durable event frame (chunks skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if frame["type"] == "event" and "sequence" in frame:
            return frame


def metric(text: str, name: str) -> float:
    """A counter's value in a /metrics answer, summed over its labels (0 when absent)."""
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name)


def stored_sequences(campaign) -> list[int]:
    return list(CampaignEvent.objects.filter(campaign=campaign).order_by("sequence").values_list("sequence", flat=True))


async def a_watched_run(server):
    """Alice's run started through the API and watched on a native socket, up to its first step."""
    alice = await db(UserFactory)(username="alice")
    campaign = await db(CampaignFactory)(owner=alice)
    ws = await watch(server, alice, campaign.public_id)
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(alice), timeout=10) as api:
        started = await api.post(f"/api/campaigns/{campaign.public_id}/runs/", json={})
    assert started.status_code == 202, started.text
    seen = []
    while not any(f["event"] == "step.started" for f in seen):
        seen.append(await next_event(ws, 30))
    return ws, campaign, started.json()["id"], seen


async def assert_completed_once(seen: list[dict], campaign, run_id: str, worker) -> None:
    """The watcher got exactly 1..N (the log's), the run completed with one artifact per type, and
    the worker is still there."""
    sequences = [f["sequence"] for f in seen]
    assert sequences == list(range(1, len(sequences) + 1)), "exactly 1..N, in order, nothing twice"
    assert sequences == await db(stored_sequences)(campaign)
    run = await db(OrchestrationRun.objects.get)(public_id=run_id)
    assert run.state == "completed"
    types = await db(lambda: sorted(Artifact.objects.filter(run=run).values_list("type", flat=True)))()
    assert types == ["Copy", "ShortCopy", "Visual"], "one artifact per type"
    assert worker.process.poll() is None, "the worker rode out the fault"
    assert "Unrecoverable error" not in worker.log(), worker.log()[-3000:]


@pytest.mark.parametrize("persistent", [False, True], ids=["restarted-empty", "restarted-with-its-data"])
async def test_redis_restarted_mid_run_the_run_completes_and_a_watcher_misses_nothing(
    start_web, start_worker, redis_server, persistent
):
    redis = redis_server(persistent=persistent)
    server = start_web(REDIS_URL=redis.url)
    # A step takes a few seconds (80 chunks, 40 ms apart), so the restart lands while a task runs
    # with its message unacknowledged: what used to kill the worker.
    worker = start_worker(REDIS_URL=redis.url, AGENT_CHUNK_DELAY_MS="40", RUN_REQUEUE_AFTER_SECONDS="3")
    ws, campaign, run_id, seen = await a_watched_run(server)

    await asyncio.get_running_loop().run_in_executor(None, lambda: redis.restart_after(down_for=1.0))
    back, before = time.monotonic(), len(seen)

    while seen[-1]["event"] != "campaign.completed":
        seen.append(await next_event(ws, 90))
        if len(seen) == before + 1:
            print(
                f"\nRedis back ({'with its data' if persistent else 'empty'}): next event after "
                f"{time.monotonic() - back:.2f} s",
                end=" ",
            )
    print(f"run completed {time.monotonic() - back:.2f} s after Redis was back", end=" ")
    await ws.close()
    await assert_completed_once(seen, campaign, run_id, worker)
    assert server.process.poll() is None


async def test_an_event_stored_while_redis_is_down_reaches_the_subscriber_without_a_later_event(
    start_web, redis_server, settings
):
    """The run's last event, say: stored while its layer message could not be sent, and nothing
    follows it to reveal the gap. It still arrives, within 5 s of Redis being back (here it is
    read from the log by the web process's head check, so it need not even wait for Redis)."""
    from channels.layers import channel_layers

    from eventlog.publisher import publish

    redis = redis_server()
    server = start_web(REDIS_URL=redis.url)
    layer = settings.CHANNEL_LAYERS["realtime"]
    hosts = [{**layer["CONFIG"]["hosts"][0], "address": redis.url}]
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        "realtime": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": hosts}},
    }
    channel_layers.backends.clear()  # publish through the test's Redis, as the product's processes do
    try:
        alice = await db(UserFactory)(username="alice")
        campaign = await db(CampaignFactory)(owner=alice)
        ws = await watch(server, alice, campaign.public_id)
        await db(publish)(campaign, "progress", {"percentage": 10, "message": "before"})
        assert (await next_event(ws, 10))["sequence"] == 1

        redis.kill()
        await db(publish)(campaign, "campaign.completed", {"run_id": None})  # stored; its send fails
        await asyncio.get_running_loop().run_in_executor(None, redis.start)
        back = time.monotonic()
        frame = await next_event(ws, 5.0)
        print(f"stored while Redis was down: delivered {time.monotonic() - back:.2f} s after Redis was back")
        assert frame["sequence"] == 2 and frame["event"] == "campaign.completed"

        # and live delivery works again through the restarted Redis
        await db(publish)(campaign, "progress", {"percentage": 20, "message": "after"})
        assert (await next_event(ws, 10))["sequence"] == 3
        await ws.close()
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
            metrics = (await api.get("/metrics")).text
        assert metric(metrics, "realtime_layer_reconnects_total") >= 1, "the reconnect is counted on /metrics"
    finally:
        channel_layers.backends.clear()
    assert "Traceback" not in server.log(), server.log()[-3000:]


async def test_a_socket_opened_while_redis_is_down_is_served_from_the_log(start_web, redis_server, settings):
    """A web process that has never reached Redis: the handshake succeeds (no 500, no traceback),
    subscribe and events work from the log, and live delivery starts once Redis is up."""
    from channels.layers import channel_layers

    from eventlog.publisher import publish

    redis = redis_server()
    redis.kill()
    server = start_web(REDIS_URL=redis.url)
    layer = settings.CHANNEL_LAYERS["realtime"]
    hosts = [{**layer["CONFIG"]["hosts"][0], "address": redis.url}]
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        "realtime": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": hosts}},
    }
    channel_layers.backends.clear()
    try:
        alice = await db(UserFactory)(username="alice")
        campaign = await db(CampaignFactory)(owner=alice)
        ws = await watch(server, alice, campaign.public_id)
        await db(publish)(campaign, "progress", {"percentage": 10, "message": "while Redis is down"})
        frame = await next_event(ws, 5.0)
        assert frame["sequence"] == 1 and frame["replayed"] is True

        await asyncio.get_running_loop().run_in_executor(None, redis.start)
        deadline = time.monotonic() + 10
        sequence = 1
        while True:  # once the process has joined the group again, events arrive live
            sequence += 1
            await db(publish)(campaign, "progress", {"percentage": sequence, "message": "live?"})
            frame = await next_event(ws, 5.0)
            assert frame["sequence"] == sequence
            if not frame.get("replayed") or time.monotonic() > deadline:
                break
        assert not frame.get("replayed"), "live delivery came back"
        await ws.close()
    finally:
        channel_layers.backends.clear()
    assert "Traceback" not in server.log(), server.log()[-3000:]


@pytest.mark.parametrize("persistent", [False, True], ids=["restarted-empty", "restarted-with-its-data"])
def test_a_stateful_signalr_client_rides_out_a_redis_restart_then_a_cut_socket(
    start_web,
    start_worker,
    redis_server,
    node_clients,  # noqa: F811 (the fixture imported above)
    persistent,
):
    """@microsoft/signalr with withStatefulReconnect(): its session lives in Redis. Redis restarts
    mid-run (empty: the web process writes the session again from what it holds), then the socket is
    cut; the client carries on with no onreconnected and every durable event once."""
    from realtime.tests.test_signalr_client import cut_mid_run_then_finished, log_sequences

    redis = redis_server(persistent=persistent)
    server = start_web(REDIS_URL=redis.url)
    start_worker(REDIS_URL=redis.url, AGENT_CHUNK_DELAY_MS="30")
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(owner=alice)
    client = node_clients("stateful", server, alice, campaign, START_RUN="1")
    while (client.expect("ReceiveOrchestrationEvent")["sequence"] or 0) < 4:
        pass
    redis.restart_after(down_for=1.0)
    published_by_then = len(log_sequences(campaign))
    while (client.expect("ReceiveOrchestrationEvent", 60)["sequence"] or 0) <= published_by_then:
        pass  # until one published after Redis came back arrives: journaled there (the session written again)
    cut_mid_run_then_finished(client, server, campaign)
    assert ("gone from Redis; written again" in server.log()) is not persistent
    assert "Traceback" not in server.log(), server.log()[-3000:]
