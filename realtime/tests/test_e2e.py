"""End to end on the real stack: daphne (marketing_agents.serve), a Celery worker, Redis, PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import websockets
from channels.db import database_sync_to_async
from django.db import transaction
from rest_framework_simplejwt.tokens import AccessToken

from campaigns.tests.factories import CampaignFactory, UserFactory
from eventlog.models import CampaignEvent
from eventlog.publisher import publish, publish_transient
from orchestration import services

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def token_for(user) -> str:
    return str(AccessToken.for_user(user))


async def connect(server, user):
    return await websockets.connect(f"{server.ws_url}/ws/campaigns/?access_token={token_for(user)}", max_size=None)


async def subscribe(ws, campaign_id, **extra) -> dict:
    await ws.send(json.dumps({"type": "subscribe", "campaign_id": campaign_id, **extra}))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert answer["type"] == "subscribed", answer
    return answer


async def collect(ws, until_event="campaign.completed", timeout=60) -> list[dict]:
    """Durable event frames until ``until_event`` (chunks and other frames are skipped)."""
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if frame["type"] == "event" and "sequence" in frame:
            events.append(frame)
            if frame["event"] == until_event:
                return events
    raise AssertionError(f"no {until_event} within {timeout} s; got {[e['event'] for e in events]}")


def log_sequences(campaign) -> list[int]:
    return list(CampaignEvent.objects.filter(campaign=campaign).order_by("sequence").values_list("sequence", flat=True))


async def log_passes(campaign, sequence: int, timeout: float = 30) -> None:
    """Wait until the campaign's log holds an event after ``sequence``."""
    later = CampaignEvent.objects.filter(campaign=campaign, sequence__gt=sequence)
    deadline = time.monotonic() + timeout
    while not await database_sync_to_async(later.exists)():
        assert time.monotonic() < deadline, f"no event after {sequence} within {timeout} s"
        await asyncio.sleep(0.05)  # polling the database for the condition above, bounded by the deadline


async def test_twenty_clients_receive_the_identical_contiguous_sequence(start_web, start_worker):
    server, _ = start_web(), start_worker(AGENT_CHUNK_DELAY_MS="2")
    alice = await database_sync_to_async(UserFactory)(username="alice")
    campaign = await database_sync_to_async(CampaignFactory)(owner=alice)
    clients = [await connect(server, alice) for _ in range(20)]
    for ws in clients:
        await subscribe(ws, campaign.public_id)
    run = await database_sync_to_async(services.run_start)(campaign=campaign, created_by=alice)
    received = await asyncio.gather(*(collect(ws) for ws in clients))
    sequences = [[frame["sequence"] for frame in frames] for frames in received]
    assert all(s == sequences[0] for s in sequences), "every client saw the same events"
    assert sequences[0] == list(range(1, len(sequences[0]) + 1))
    assert sequences[0] == await database_sync_to_async(log_sequences)(campaign)
    assert received[0][-1]["data"] == {"run_id": run.public_id}
    for ws in clients:
        await ws.close()


async def test_a_client_that_drops_mid_run_resumes_with_exactly_what_it_missed(start_web, start_worker):
    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="5")
    alice = await database_sync_to_async(UserFactory)(username="alice")
    campaign = await database_sync_to_async(CampaignFactory)(owner=alice)
    ws = await connect(server, alice)
    await subscribe(ws, campaign.public_id)
    await database_sync_to_async(services.run_start)(campaign=campaign, created_by=alice)
    seen = await collect(ws, until_event="artifact.generated")
    await ws.close()  # the connection drops mid-run
    last = seen[-1]["sequence"]
    await log_passes(campaign, last)  # the run goes on while the client is away
    ws = await connect(server, alice)
    answer = await subscribe(ws, campaign.public_id, last_sequence=last)
    assert answer["last_sequence"] >= last
    rest = await collect(ws)
    assert [f["sequence"] for f in rest] == list(range(last + 1, rest[-1]["sequence"] + 1))
    replayed = [f for f in rest if f["sequence"] <= answer["last_sequence"]]
    assert all(f.get("replayed") for f in replayed)
    everything = [f["sequence"] for f in seen + rest]
    assert everything == await database_sync_to_async(log_sequences)(campaign)
    await ws.close()


async def test_a_gap_forced_by_a_tiny_channel_capacity_is_filled_from_the_log(start_web, settings):
    from channels.layers import channel_layers

    # The core layer with a capacity of one message per channel: most of a burst is dropped.
    server = start_web(REALTIME_LAYER="core", CHANNEL_LAYER_CAPACITY="1")
    alice = await database_sync_to_async(UserFactory)(username="alice")
    campaign = await database_sync_to_async(CampaignFactory)(owner=alice)
    ws = await connect(server, alice)
    await subscribe(ws, campaign.public_id)
    core = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        "realtime": {**core, "CONFIG": {**core["CONFIG"], "capacity": 1, "prefix": "rt"}},
    }
    channel_layers.backends.clear()
    try:

        def burst():
            # One transaction: the 200 sends fire back to back at commit, faster than the hub reads.
            with transaction.atomic():
                for i in range(200):
                    publish(campaign, "progress", {"percentage": i % 100, "message": f"step {i}"})

        await database_sync_to_async(burst)()
    finally:
        channel_layers.backends.clear()
    frames = []
    deadline = time.monotonic() + 20
    while (not frames or frames[-1]["sequence"] < 200) and time.monotonic() < deadline:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if frame["type"] == "event":
            frames.append(frame)
    assert [f["sequence"] for f in frames] == list(range(1, 201))
    assert any(f.get("replayed") for f in frames), "some were missing live and came from the log"
    await ws.close()


async def test_a_slow_client_is_closed_and_the_others_are_unaffected(start_web):
    server = start_web(WS_OUTBOUND_BUFFER_BYTES="32768", WS_SLOW_CLIENT_SECONDS="2")
    alice = await database_sync_to_async(UserFactory)(username="alice")
    campaign = await database_sync_to_async(CampaignFactory)(owner=alice)
    fast = await connect(server, alice)
    await subscribe(fast, campaign.public_id)
    # The slow client stops reading (a 4 KB receive buffer, one queued frame): its socket buffers
    # fill, then the server's.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    slow = await websockets.connect(
        f"{server.ws_url}/ws/campaigns/?access_token={token_for(alice)}", max_size=None, max_queue=1, sock=sock
    )
    await subscribe(slow, campaign.public_id)

    def flood():
        # Durable events cannot be shed (chunks can): 200 of them, 60 KB each, outgrow every buffer.
        for i in range(200):
            publish(campaign, "progress", {"percentage": i % 100, "message": "y" * 60_000})
            publish_transient(
                campaign,
                "artifact.chunk",
                {"artifact_type": "Copy", "chunk": "z" * 1000, "chunk_index": i, "is_complete": False},
            )

    await database_sync_to_async(flood)()
    received = []
    while len(received) < 200:
        frame = json.loads(await asyncio.wait_for(fast.recv(), 30))
        if frame["type"] == "event" and "sequence" in frame:
            received.append(frame["sequence"])
    assert received == list(range(1, 201)), "the fast client got every durable event, in order"
    deadline = time.monotonic() + 30
    while "closed with 1013" not in server.log() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert "closed with 1013" in server.log()
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(slow.recv(), 30)
    assert closed.value.rcvd is None or closed.value.rcvd.code == 1013
    await fast.close()


async def test_a_second_user_is_refused_another_users_campaign(start_web):
    server = start_web()
    alice = await database_sync_to_async(UserFactory)(username="alice")
    bob = await database_sync_to_async(UserFactory)(username="bob")
    campaign = await database_sync_to_async(CampaignFactory)(owner=alice)
    ws = await connect(server, bob)
    await ws.send(json.dumps({"type": "subscribe", "campaign_id": campaign.public_id}))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert answer["type"] == "error" and answer["code"] == "not_found"
    await database_sync_to_async(publish)(campaign, "progress", {"percentage": 1, "message": "secret"})
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
    await ws.close()
    assert "access_token=ey" not in server.log(), "tokens never reach the log"


async def group_state(campaign_ids: list[str]) -> int:
    """What Redis holds for these campaigns' groups: pub/sub subscribers, or core-layer group members."""
    import redis.asyncio as aioredis
    from django.conf import settings

    client = aioredis.Redis.from_url(settings.REDIS_URL)
    try:
        held = 0
        for campaign_id in campaign_ids:
            channels = await client.pubsub_channels(f"*campaign.{campaign_id}*")
            if channels:
                held += sum(count for _, count in await client.pubsub_numsub(*channels))
            for key in await client.keys(f"*group*campaign.{campaign_id}*"):
                held += await client.zcard(key)
        return held
    finally:
        await client.aclose()


@pytest.mark.parametrize("layer", ["pubsub", "core"])
async def test_a_mass_disconnect_leaves_no_group_state(start_web, settings, layer):
    server = start_web(REALTIME_LAYER=layer)
    if layer == "core":  # publish over the layer the server reads (channels resets its layers)
        core = settings.CHANNEL_LAYERS["default"]
        settings.CHANNEL_LAYERS = {
            **settings.CHANNEL_LAYERS,
            "realtime": {**core, "CONFIG": {**core["CONFIG"], "prefix": "rt"}},
        }
    alice = await database_sync_to_async(UserFactory)(username="alice")
    campaigns = [await database_sync_to_async(CampaignFactory)(owner=alice) for _ in range(5)]
    ids = [c.public_id for c in campaigns]
    limit = asyncio.Semaphore(50)

    async def open_one(i: int):
        async with limit:
            ws = await connect(server, alice)
            await subscribe(ws, ids[i % len(ids)])
            return ws

    clients = await asyncio.gather(*(open_one(i) for i in range(300)))
    assert await group_state(ids) == len(ids), "one membership per campaign for the whole process"

    for ws in clients:  # all at once, without a close handshake, as when a network drops
        ws.transport.abort()
    deadline = time.monotonic() + 15
    while await group_state(ids) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert await group_state(ids) == 0, "no group membership outlives the connections"
    log = server.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]

    # The process still serves: a new subscriber gets the next event live.
    ws = await connect(server, alice)
    await subscribe(ws, ids[0])
    await database_sync_to_async(publish)(campaigns[0], "progress", {"percentage": 5, "message": "after"})
    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["type"] == "event" and frame["data"]["message"] == "after"
    await ws.close()


async def test_a_server_shutdown_tells_clients_to_reconnect(start_web):
    server = start_web()
    alice = await database_sync_to_async(UserFactory)(username="alice")
    campaign = await database_sync_to_async(CampaignFactory)(owner=alice)
    clients = [await connect(server, alice) for _ in range(3)]
    for ws in clients:
        await subscribe(ws, campaign.public_id)
    await asyncio.get_running_loop().run_in_executor(None, server.stop)  # SIGTERM, as a deploy does
    for ws in clients:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, closed.value  # going away
