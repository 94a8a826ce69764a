"""The process fan-out (realtime/fanout.py): system notices to every client, the shutdown notice, and
its tasks stopping when cancelled.
"""

from __future__ import annotations

import asyncio

import pytest

from campaigns.tests.factories import CampaignFactory
from realtime.fanout import BROADCAST_GROUP, FanOut, get_fanout
from realtime.services import notice_send
from realtime.tests.sockets import (
    assert_usable,
    db,
    drain,
    expect_close,
    expect_error,
    expect_silence,
    hub_layer,
    recv,
    subscribe,
)

pytestmark = pytest.mark.django_db(transaction=True)


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


async def test_a_second_subscriber_is_answered_only_once_the_campaigns_group_is_joined(ws, users):
    """The first subscriber of a campaign in a process joins the campaign's group; one arriving
    meanwhile must not be told it is subscribed (and read the log's end) before that join is done,
    or a live event in between would reach it only later, from the head check. group_add is held
    here until the test lets it go."""
    campaign = await db(CampaignFactory)(owner=users["alice"])
    first, second = await ws(users["alice"]), await ws(users["alice"])
    layer = hub_layer()
    group_add, entered, gate = layer.group_add, asyncio.Event(), asyncio.Event()

    async def held_group_add(group: str, channel: str) -> None:
        if group != BROADCAST_GROUP:
            entered.set()
            await gate.wait()
        await group_add(group, channel)

    layer.group_add = held_group_add
    try:
        await first.send_json_to({"type": "subscribe", "campaign_id": campaign.public_id})
        await asyncio.wait_for(entered.wait(), 5)
        await second.send_json_to({"type": "subscribe", "campaign_id": campaign.public_id})
        await expect_silence(second)
        gate.set()
        assert (await recv(first))["type"] == "subscribed"
        assert (await recv(second))["type"] == "subscribed"
    finally:
        del layer.group_add


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
