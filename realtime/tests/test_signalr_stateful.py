"""SignalR stateful reconnect (realtime/signalr/stateful.py, docs/SIGNALR.md) over the real ASGI app and
the real Redis: what a client sees on the wire when its socket drops and it comes back with its token.

The client's rules, from @microsoft/signalr's MessageBuffer: it numbers the Invocation, StreamItem,
Completion, StreamInvocation and CancelInvocation messages it receives (1, 2, ...); after a
reconnect it waits for the server's Sequence(N), takes the next message as number N, and drops
every number it has already seen. So the server must send again exactly what followed the last
Ack, in the same order, and only then anything new.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from campaigns.tests.factories import CampaignFactory
from eventlog.publisher import publish, publish_transient
from marketing_agents import redisconf
from realtime.consumers.signalr import STATE_LOST
from realtime.signalr import stateful
from realtime.signalr.http import connection_token, new_connection_id
from realtime.signalr.protocol import RS
from realtime.tests.hubs import PATH, Hub, db, invoke, rec, token_for

pytestmark = pytest.mark.django_db(transaction=True)

CONTROL = (6, 8)  # Ping and Ack: not numbered, not sent again


def new_session(user) -> tuple[str, str]:
    """What negotiate does for a client that asks for stateful reconnect: the session and its URL."""
    session_id = new_connection_id()
    assert stateful.create(session_id, user.pk)
    return session_id, f"{PATH}?id={connection_token(session_id, stateful=True)}&access_token={token_for(user)}"


def stored(session_id: str) -> dict[str, str]:
    client = redisconf.client(redisconf.current())
    try:
        return {k.decode(): v.decode() for k, v in client.hgetall(stateful.KEY.format(session_id)).items()}
    finally:
        client.close()


async def until_stored(session_id: str, field: str, value: str, timeout: float = 5) -> None:
    """Bounded polling: the session's writer stores what it sent a moment after sending it."""
    deadline = time.monotonic() + timeout
    while (await db(stored)(session_id)).get(field) != value:
        assert time.monotonic() < deadline, f"{field} never became {value}: {await db(stored)(session_id)}"
        await asyncio.sleep(0.02)


async def numbered(connection: Hub, count: int) -> list[dict[str, Any]]:
    """The next ``count`` numbered messages (Pings and Acks skipped)."""
    out = []
    while len(out) < count:
        message = await connection.next()
        assert message.get("type") != "websocket.close", out
        if message.get("type") not in CONTROL:
            out.append(message)
    return out


async def started(hub, user, path: str, version: int = 2) -> Hub:
    connection = await hub(user, path=path, handshake=False)
    await connection.send(rec({"protocol": "json", "version": version}))
    assert await connection.next() == {}
    return connection


async def events(campaign, first: int, last: int) -> None:
    for number in range(first, last + 1):
        await db(publish)(campaign, "step.completed", {"n": number})


async def close_message(connection: Hub) -> dict[str, Any]:
    """The Close record the server sends (what comes before it skipped)."""
    message = await connection.next()
    while message.get("type") != 7:
        assert message.get("type") != "websocket.close", message
        message = await connection.next()
    return message


def sequences(messages: list[dict[str, Any]]) -> list[int]:
    return [m["arguments"][0]["sequence"] for m in messages if m.get("target") == "ReceiveOrchestrationEvent"]


async def test_a_dropped_connection_gets_what_it_had_not_acknowledged_then_what_it_missed(hub, users):
    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    completion = await first.call("SubscribeToCampaign", campaign.public_id)  # message 1
    assert completion == {"type": 3, "invocationId": "1"}
    await events(campaign, 1, 4)
    received = await numbered(first, 4)  # messages 2-5
    assert sequences(received) == [1, 2, 3, 4]
    await first.send(rec({"type": 8, "sequenceId": 3}))  # the client has handled 1-3
    await until_stored(session_id, "base", "4")
    await first.comm.disconnect()
    await until_stored(session_id, "owner", "")
    await events(campaign, 5, 6)  # while nobody is connected

    second = await hub(alice, path=path, handshake=False)  # no handshake: the same connection, resumed
    assert await second.next() == {"type": 9, "sequenceId": 4}
    again = await numbered(second, 2)  # 4 and 5 were not acknowledged: sent again, in order
    assert sequences(again) == [3, 4] and all(m["arguments"][0]["replayed"] for m in again)
    assert sequences(await numbered(second, 2)) == [5, 6]  # then what happened meanwhile, from the log
    await events(campaign, 7, 7)
    live = await numbered(second, 1)
    assert sequences(live) == [7] and "replayed" not in live[0]["arguments"][0]
    assert await second.quiet()


async def test_the_clients_own_messages_are_not_handled_twice(hub, users):
    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.send(invoke("SubscribeToCampaign", campaign.public_id, invocation_id="1"))
    assert await first.next() == {"type": 3, "invocationId": "1"}
    assert await first.next() == {"type": 8, "sequenceId": 1}  # handled, and stored as handled
    assert (await db(stored)(session_id))["received"] == "1"
    await first.comm.disconnect()

    second = await hub(alice, path=path, handshake=False)
    assert await second.next() == {"type": 9, "sequenceId": 1}  # the client never acknowledged the Completion
    assert await second.next() == {"type": 3, "invocationId": "1"}
    # The client missed the server's Ack: it sends its invocation again after its own Sequence.
    await second.send(
        rec({"type": 9, "sequenceId": 1}) + invoke("SubscribeToCampaign", campaign.public_id, invocation_id="1")
    )
    await second.send(invoke("GetCampaignSnapshot", campaign.public_id, invocation_id="2"))
    answer = await numbered(second, 2)
    assert answer[0]["target"] == "ReceiveCampaignSnapshot" and answer[1]["invocationId"] == "2"
    assert await second.next() == {"type": 8, "sequenceId": 2}
    assert await second.quiet()  # no second answer to invocation 1


async def test_transient_chunks_not_acknowledged_are_sent_again(hub, users):
    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.call("JoinCampaignGroup", campaign.public_id)
    await db(publish)(campaign, "campaign.started", {"run_id": "run_x", "plan": []})
    chunk = {"run_id": "run_x", "artifact_type": "Copy", "chunk": "Bottles ", "chunk_index": 0, "is_complete": False}
    await db(publish_transient)(campaign, "artifact.chunk", chunk)
    sent = await numbered(first, 2)
    assert [m["target"] for m in sent] == ["OnCampaignStarted", "OnChunkReceived"]
    await first.comm.disconnect()

    second = await hub(alice, path=path, handshake=False)
    assert await second.next() == {"type": 9, "sequenceId": 1}
    assert await numbered(second, 3) == [{"type": 3, "invocationId": "1"}, *sent]


async def test_a_second_socket_with_the_token_takes_the_session_and_the_first_is_closed(hub, users):
    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.call("SubscribeToCampaign", campaign.public_id)
    # The client gave up on a socket the server still thinks open (a half-open TCP connection).
    second = await hub(alice, path=path, handshake=False)
    assert await second.next() == {"type": 9, "sequenceId": 1}
    assert await numbered(second, 1) == [{"type": 3, "invocationId": "1"}]
    closed = await first.next()
    while closed.get("type") != "websocket.close":
        closed = await first.next()
    assert closed["code"] == 1001  # a bare close: a Close message would end the session
    await events(campaign, 1, 1)
    assert sequences(await numbered(second, 1)) == [1]
    assert (await db(stored)(session_id))["epoch"] == "2"


async def test_a_close_message_ends_the_session(hub, users):
    alice = users["alice"]
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.send(rec({"type": 7}))
    assert (await first.next())["type"] == "websocket.close"
    assert await db(stored)(session_id) == {}


@pytest.mark.parametrize("who", ["bob", "nobody"])
async def test_a_resume_by_anyone_else_is_refused_before_the_websocket_opens(hub, users, who):
    from channels.testing import WebsocketCommunicator

    from marketing_agents.asgi import application

    alice = users["alice"]
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.comm.disconnect()
    token = connection_token(session_id, stateful=True)
    stolen = f"{PATH}?id={token}" + (f"&access_token={token_for(users['bob'])}" if who == "bob" else "")
    connected, _ = await WebsocketCommunicator(application, stolen).connect(timeout=5)
    assert not connected
    assert (await db(stored)(session_id))["epoch"] == "1", "the session is untouched"


async def test_a_session_that_is_gone_is_refused_so_the_client_starts_afresh(hub, users):
    from channels.testing import WebsocketCommunicator

    from marketing_agents.asgi import application

    alice = users["alice"]
    session_id = new_connection_id()  # a stateful token whose session expired (or was never made)
    path = f"{PATH}?id={connection_token(session_id, stateful=True)}&access_token={token_for(alice)}"
    connected, _ = await WebsocketCommunicator(application, path).connect(timeout=5)
    assert not connected


async def test_a_version_1_handshake_is_not_stateful(hub, users):
    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path, version=1)
    assert await first.call("SubscribeToCampaign", campaign.public_id) == {"type": 3, "invocationId": "1"}
    assert await first.quiet()  # no Ack
    assert await db(stored)(session_id) == {}


async def test_messagepack_sessions_resume_in_messagepack(hub, users):
    from realtime.signalr.protocol import pack, unpack

    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await hub(alice, path=path, handshake=False)
    await first.comm.send_input({"type": "websocket.receive", "text": '{"protocol":"messagepack","version":2}' + RS})
    assert (await first.comm.receive_output(5))["text"] == "{}" + RS
    join = pack({"type": 1, "invocationId": "1", "target": "SubscribeToCampaign", "arguments": [campaign.public_id]})
    await first.comm.send_input({"type": "websocket.receive", "bytes": join})
    assert unpack((await first.comm.receive_output(5))["bytes"])[0] == {"type": 3, "invocationId": "1"}
    await events(campaign, 1, 1)
    got: list[dict[str, Any]] = []
    while not [m for m in got if m["type"] == 1]:  # the event reached the client: it is resent from the journal
        got += unpack((await first.comm.receive_output(5))["bytes"])
    assert (await db(stored)(session_id))["protocol"] == "messagepack"
    await first.comm.disconnect()

    second = await hub(alice, path=path, handshake=False)
    seen: list[dict[str, Any]] = []
    while len([m for m in seen if m["type"] not in CONTROL]) < 3:
        seen += unpack((await second.comm.receive_output(5))["bytes"])
    seen = [m for m in seen if m["type"] != 6]
    assert seen[:2] == [{"type": 9, "sequenceId": 1}, {"type": 3, "invocationId": "1"}]
    assert [m["target"] for m in seen[2:]] == ["ReceiveOrchestrationEvent"]
    assert seen[2]["arguments"][0]["sequence"] == 1


async def test_a_client_behind_on_its_acks_is_held_back_like_a_slow_one(hub, users, settings):
    """Past SIGNALR_UNACKED_LIMIT unacknowledged messages the connection counts as congested: durable
    events wait (in the log, not in the journal) until the client acks, then come in order."""
    settings.SIGNALR_UNACKED_LIMIT = 3
    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.call("SubscribeToCampaign", campaign.public_id)  # message 1
    await events(campaign, 1, 5)
    assert sequences(await numbered(first, 3)) == [1, 2, 3]  # messages 2-4: 4 unacknowledged, over the limit
    assert await first.quiet()
    await first.send(rec({"type": 8, "sequenceId": 4}))
    assert sequences(await numbered(first, 2)) == [4, 5]
    await until_stored(session_id, "base", "5")
    assert len(await db(entries_in)(session_id)) == 2  # the journal: what is not acknowledged, no more


async def test_a_session_redis_lost_is_written_again_by_its_owner(hub, users):
    """As after Redis restarted without its data (test_fault_redis restarts the real one): the
    connection's process still knows the session, and writes it again with its next batch."""
    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.call("SubscribeToCampaign", campaign.public_id)  # message 1
    await events(campaign, 1, 2)  # messages 2 and 3
    assert sequences(await numbered(first, 2)) == [1, 2]
    await first.send(rec({"type": 8, "sequenceId": 2}))
    await until_stored(session_id, "base", "3")
    client = redisconf.client(redisconf.current())
    client.delete(stateful.KEY.format(session_id), stateful.LOG_KEY.format(session_id))
    client.close()
    await events(campaign, 3, 3)  # message 4: its commit finds the session gone
    assert sequences(await numbered(first, 1)) == [3]
    await until_stored(session_id, "base", "3")
    await first.comm.disconnect()

    second = await hub(alice, path=path, handshake=False)
    assert await second.next() == {"type": 9, "sequenceId": 3}
    assert sequences(await numbered(second, 2)) == [2, 3]  # 3 and 4 again: nothing was forgotten


async def test_an_event_rendered_as_two_calls_is_resent_from_the_one_not_acknowledged(hub, users):
    """A task-012 artifact event is two client calls (ReceiveOrchestrationEvent, ReceiveArtifactUpdate):
    each is numbered; acknowledged between them, only the second is sent again."""
    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.call("SubscribeToCampaign", campaign.public_id)  # message 1
    artifact = {"id": "art_x", "type": "Copy", "content": "Bottles for commuters."}
    await db(publish)(campaign, "artifact.generated", {"artifact": artifact})
    sent = await numbered(first, 2)  # messages 2 and 3
    assert [m["target"] for m in sent] == ["ReceiveOrchestrationEvent", "ReceiveArtifactUpdate"]
    await first.send(rec({"type": 8, "sequenceId": 2}))
    await until_stored(session_id, "base", "3")
    await first.comm.disconnect()

    second = await hub(alice, path=path, handshake=False)
    assert await second.next() == {"type": 9, "sequenceId": 3}
    again = await numbered(second, 1)
    assert again[0]["target"] == "ReceiveArtifactUpdate"
    assert again[0]["arguments"][0]["artifact"] == artifact and again[0]["arguments"][0]["sequence"] == 1


async def test_a_client_sequence_past_what_was_handled_ends_the_session(hub, users):
    alice = users["alice"]
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.comm.disconnect()
    second = await hub(alice, path=path, handshake=False)
    assert await second.next() == {"type": 9, "sequenceId": 1}
    await second.send(rec({"type": 9, "sequenceId": 5}))  # messages 1-4 of the client's were never seen
    assert await second.next() == {"type": 7, "error": "Sequence ID greater than amount of messages we've received."}
    assert await db(stored)(session_id) == {}


async def test_an_ack_past_what_was_sent_ends_the_session_so_the_client_starts_afresh(hub, users):
    """The client has seen more than the session knows of (Redis lost recent writes in a failover):
    new messages would reuse ids the client drops as seen, so the session ends instead."""
    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.call("SubscribeToCampaign", campaign.public_id)  # message 1
    await first.send(rec({"type": 8, "sequenceId": 2}))
    assert await close_message(first) == {"type": 7, "error": STATE_LOST, "allowReconnect": True}
    assert await db(stored)(session_id) == {}


async def test_a_stopping_process_closes_a_stateful_socket_and_keeps_its_session(hub, users):
    """No Close message (it would end the session): a bare 1001, and the client resumes elsewhere."""
    from realtime.fanout import get_fanout

    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.call("SubscribeToCampaign", campaign.public_id)
    await get_fanout().close_all(timeout=1.0)
    closed = await first.next()
    while closed.get("type") == 8:  # the Ack of the subscription
        closed = await first.next()
    assert closed["type"] == "websocket.close" and closed["code"] == 1001, closed
    kept = await db(stored)(session_id)  # for whichever process the client reaches next
    assert kept["state"] == "open" and json.loads(kept["subs"])[campaign.public_id][3] == 0


async def test_a_journal_redis_rolled_back_ends_the_session_rather_than_reuse_ids(hub, users):
    """As after a failover to a replica that had not got the last writes: the client has seen
    messages the journal no longer holds, so numbering on from it would have the client drop new
    messages as seen. The connection ends its session and says to start afresh."""
    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.call("SubscribeToCampaign", campaign.public_id)  # message 1
    await events(campaign, 1, 2)
    assert sequences(await numbered(first, 2)) == [1, 2]
    client = redisconf.client(redisconf.current())
    client.rpop(stateful.LOG_KEY.format(session_id))  # message 3 was lost
    client.close()
    await events(campaign, 3, 3)
    assert await close_message(first) == {"type": 7, "error": STATE_LOST, "allowReconnect": True}
    assert await db(stored)(session_id) == {}


async def test_an_idle_session_keeps_its_keys_alive(hub, users, monkeypatch):
    monkeypatch.setattr(stateful, "REFRESH_SECONDS", 0.1)
    alice = users["alice"]
    session_id, path = await db(new_session)(alice)
    await started(hub, alice, path)
    client = redisconf.client(redisconf.current())
    try:
        client.expire(stateful.KEY.format(session_id), 5)
        deadline = time.monotonic() + 5
        while client.ttl(stateful.KEY.format(session_id)) <= 5:  # bounded polling: the writer's timer
            assert time.monotonic() < deadline, "the session's TTL was never refreshed"
            await asyncio.sleep(0.05)
        assert client.ttl(stateful.KEY.format(session_id)) > 60
    finally:
        client.close()


async def test_a_journal_that_holds_a_pruned_event_cannot_be_resumed(hub, users):
    """Retention pruned an event the client never acknowledged: the session cannot be played again,
    so the reconnect is refused before the socket opens (the client starts afresh) and it ends."""
    from channels.testing import WebsocketCommunicator

    from eventlog.models import CampaignEvent
    from marketing_agents.asgi import application

    alice = users["alice"]
    campaign = await db(CampaignFactory)(owner=alice)
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.call("SubscribeToCampaign", campaign.public_id)
    await events(campaign, 1, 1)
    assert sequences(await numbered(first, 1)) == [1]
    await first.comm.disconnect()
    await db(CampaignEvent.objects.filter(campaign=campaign).delete)()
    connected, _ = await WebsocketCommunicator(application, path).connect(timeout=5)
    assert not connected
    assert await db(stored)(session_id) == {}


# --- the session store itself (the Lua scripts, on the real Redis) ---------------------------------------------


@pytest.fixture
async def store():
    yield stateful
    await stateful.close_client()


def entries_in(session_id: str) -> list[str]:
    client = redisconf.client(redisconf.current())
    try:
        return [entry.decode() for entry in client.lrange(stateful.LOG_KEY.format(session_id), 0, -1)]
    finally:
        client.close()


async def test_a_commit_appends_once_trims_what_was_acked_and_refuses_a_stale_owner(store):
    session_id = new_connection_id()
    assert store.create(session_id, 7)
    assert await store.take(session_id, 8, "x", state=store.NEGOTIATED) is None, "another user's"
    assert await store.take(session_id, 7, "x", state=store.OPEN) is None, "not resumable before it opened"
    taken = await store.take(session_id, 7, "hub.a", state=store.NEGOTIATED, protocol="json")
    assert (taken.epoch, taken.base, taken.next_id, taken.entries) == (1, 1, 1, [])

    commit = store.commit
    await commit(session_id, 1, ttl=60, acked=0, first_id=1, entries=["r\x1fa", "r\x1fb"], fields={"received": 3})
    # A retry of the same batch (its reply was lost) is not appended twice.
    await commit(session_id, 1, ttl=60, acked=0, first_id=1, entries=["r\x1fa", "r\x1fb"], fields={})
    await commit(session_id, 1, ttl=60, acked=1, first_id=3, entries=["r\x1fc"], fields={})
    assert entries_in(session_id) == ["r\x1fb", "r\x1fc"]
    assert (stored(session_id)["base"], stored(session_id)["received"]) == ("2", "3")
    with pytest.raises(stateful.SessionLost, match="out of step"):  # a batch that skips ids
        await commit(session_id, 1, ttl=60, acked=1, first_id=9, entries=["r\x1fz"], fields={})

    # All acknowledged (the list goes), then a batch that leaves the TTL alone: the new list gets the session's.
    await commit(session_id, 1, ttl=60, acked=3, first_id=4, entries=[], fields={})
    await commit(session_id, 1, ttl=0, acked=3, first_id=4, entries=["r\x1fd"], fields={})
    client = redisconf.client(redisconf.current())
    assert 0 < client.ttl(stateful.LOG_KEY.format(session_id)) <= 60
    client.close()

    resumed = await store.take(session_id, 7, "hub.b", state=store.OPEN)
    assert (resumed.epoch, resumed.previous_owner, resumed.base, resumed.next_id) == (2, "hub.a", 4, 5)
    assert resumed.entries == ["r\x1fd"] and resumed.received == 3
    with pytest.raises(stateful.SessionLost, match="taken over"):  # the first owner can write no more
        await commit(session_id, 1, ttl=60, acked=4, first_id=5, entries=["r\x1fe"], fields={})
    await store.end(session_id, 1)  # nor end it
    assert stored(session_id)["epoch"] == "2"
    # An owner that lost it, not told before Redis restarted empty, wrote it again with its older epoch:
    # the newer owner does not carry on from that journal.
    client = redisconf.client(redisconf.current())
    client.hset(stateful.KEY.format(session_id), "epoch", 1)
    client.close()
    with pytest.raises(stateful.JournalOutOfStep):
        await commit(session_id, 2, ttl=60, acked=4, first_id=5, entries=["r\x1fe"], fields={})
    await store.end(session_id, 1)
    assert stored(session_id) == {} and entries_in(session_id) == []


def test_journal_entries_round_trip():
    durable = stateful.durable_entry("campaign", 4, "camp_x", 12, "signalr-task012", 1)
    assert stateful.parse_entry(durable) == ("d", ("campaign", 4, "camp_x", 12, "signalr-task012", 1))
    record_text = '{"type":3,"invocationId":"1","result":"a\\u001fb"}'
    assert stateful.parse_entry(stateful.raw_entry(record_text)) == ("r", record_text)
