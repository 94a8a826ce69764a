"""The cap on realtime connections per user (realtime/limits.py): native sockets, SignalR hubs and event
streams counted together, across every web process, in Redis. Each transport refuses in its own way
(an error frame and 1008; a negotiate or handshake error; 429 with Retry-After); staff apart; no cap,
no Redis; Redis away, connections admitted and counted once it is back; a stateful SignalR resume
counted like any connection; a dead process's connections lapse. Over the real ASGI app and a real Redis, then two
real daphne processes with the real clients (websockets, httpx, @microsoft/signalr)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest
from channels.testing import HttpCommunicator
from django.test import Client
from rest_framework.test import APIClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from campaigns.tests.factories import PASSWORD, UserFactory
from marketing_agents import redisconf
from marketing_agents.asgi import application
from marketing_agents.tests.processes import RedisServer
from realtime import fanout, limits
from realtime.fanout import PRESENCE_PREFIX, get_fanout
from realtime.limits import ConnectionSlots
from realtime.tests.hubs import HANDSHAKE, NEGOTIATE
from realtime.tests.sockets import assert_usable, db, expect_close, expect_error, token_for
from realtime.tests.test_signalr_client import JS_DIR, SCRIPT
from realtime.tests.test_signalr_client import NodeClient as _NodeClient
from realtime.tests.test_signalr_stateful import new_session, started
from realtime.tests.test_sse import EventStream

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 30  # seconds: the bound of every wait for one condition


def refusal(cap: int) -> str:
    return f"Too many open connections for this account (at most {cap}); close one and try again."


def redis_client():
    return redisconf.client(redisconf.current(), socket_timeout=2, decode_responses=True)


def held(user) -> list[str]:
    """The members counted for the user in Redis now (those not lapsed)."""
    client = redis_client()
    try:
        return client.zrangebyscore(limits.KEY.format(user.pk), f"({limits.clock()}", "+inf")
    finally:
        client.close()


async def until(condition, what: str, timeout: float = 10) -> None:
    """Bounded polling, for what happens in the background (a presence write, a release)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        await asyncio.sleep(0.02)


@pytest.fixture
def cap(settings, monkeypatch):
    """The cap on (the suite keeps it off), Redis never paused from an earlier test, no counts left over."""
    monkeypatch.setattr(limits, "_paused_until", 0.0)
    client = redis_client()
    try:
        for key in client.scan_iter(match=limits.KEY.format("*"), count=500):
            client.delete(key)
    finally:
        client.close()

    def set_cap(per_user: int, staff: int = 0) -> None:
        settings.WS_MAX_CONNECTIONS_PER_USER = per_user
        settings.WS_STAFF_MAX_CONNECTIONS_PER_USER = staff

    return set_cap


@pytest.fixture
def own_redis(settings, tmp_path):
    """A redis-server of the test's own as REDIS_URL (what the cap and the presence loop use; the
    channel layer stays on the suite's), to be killed and restarted for real."""
    server = RedisServer(tmp_path).start()
    settings.REDIS_URL = server.url
    yield server
    server.stop()


@pytest.fixture
def quick_presence(monkeypatch):
    """The presence loop (and so the cap's re-write) every 50 ms instead of every 10 s."""
    monkeypatch.setattr(fanout, "PRESENCE_SECONDS", 0.05)


async def negotiate(user) -> tuple[int, dict[str, Any]]:
    def post():
        response = Client().post(f"{NEGOTIATE}?negotiateVersion=1", HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
        return response.status_code, response.json()

    return await db(post)()


def account_stream(user) -> HttpCommunicator:
    headers = [(b"authorization", f"Bearer {token_for(user)}".encode())]
    return HttpCommunicator(application, "GET", "/api/account/stream/", headers=headers)


async def open_stream(user) -> HttpCommunicator:
    """An event stream that started (200); the test ends it with ``end_stream``."""
    stream = account_stream(user)
    await stream.send_input({"type": "http.request", "body": b""})
    start = await stream.receive_output(5)
    assert (start["type"], start["status"]) == ("http.response.start", 200), start
    return stream


async def end_stream(stream: HttpCommunicator) -> None:
    await stream.send_input({"type": "http.disconnect"})
    await stream.wait(5)


# --- each transport's refusal -----------------------------------------------------------------------------


async def test_a_native_socket_over_the_cap_gets_an_error_frame_then_1008_and_others_are_unaffected(ws, users, cap):
    cap(2)
    alice, bob = users["alice"], users["bob"]
    first, second = await ws(alice), await ws(alice)
    await assert_usable(first)
    await assert_usable(second)

    third = await ws(alice)

    frame = await expect_error(third, "too_many_connections")
    assert frame["message"] == refusal(2)
    await expect_close(third, 1008)
    await assert_usable(await ws(bob))  # each user has a cap of their own
    assert len(held(alice)) == 2
    await first.disconnect()
    await assert_usable(await ws(alice))  # a slot freed by a close is free at once


async def test_a_hub_over_the_cap_gets_a_handshake_error(ws, hub, users, cap):
    cap(1)
    alice = users["alice"]
    native = await ws(alice)
    await assert_usable(native)

    connection = await hub(alice, handshake=False)
    await connection.send(HANDSHAKE)

    assert await connection.next() == {"error": refusal(1)}
    closed = await connection.next()
    assert (closed["type"], closed["code"]) == ("websocket.close", 1000)
    await native.disconnect()
    await hub(alice)  # the refused one was never counted: with the socket gone, a hub is admitted


async def test_negotiate_at_the_cap_answers_200_with_the_error_the_client_raises(ws, users, cap):
    cap(1)
    alice, bob = users["alice"], users["bob"]
    status, answer = await negotiate(alice)
    assert status == 200 and "connectionToken" in answer, answer  # below the cap: a plain answer
    await assert_usable(await ws(alice))

    assert await negotiate(alice) == (200, {"error": refusal(1)})
    status, answer = await negotiate(bob)
    assert status == 200 and "connectionToken" in answer, answer


async def test_an_event_stream_over_the_cap_is_429_with_retry_after_and_streams_count_like_sockets(ws, users, cap):
    cap(1)
    alice = users["alice"]
    native = await ws(alice)
    await assert_usable(native)

    response = await account_stream(alice).get_response(timeout=5)

    assert response["status"] == 429
    headers = dict(response["headers"])
    assert headers[b"retry-after"] == b"10" and headers[b"content-type"] == b"application/json"
    assert json.loads(response["body"]) == {"detail": refusal(1)}
    await native.disconnect()
    stream = await open_stream(alice)  # the stream holds the one slot now
    refused = await ws(alice)
    await expect_error(refused, "too_many_connections")
    await end_stream(stream)
    await assert_usable(await ws(alice))


async def test_staff_are_not_capped_unless_told(ws, users, cap):
    cap(1)
    operator = users["operator"]
    sockets = [await ws(operator) for _ in range(3)]
    for comm in sockets:
        await assert_usable(comm)
    assert held(operator) == []  # not even counted

    cap(1, staff=2)  # counted from here on
    await assert_usable(await ws(operator))
    await assert_usable(await ws(operator))
    await expect_error(await ws(operator), "too_many_connections")


# --- no cap, Redis away, Redis restarted ---------------------------------------------------------------------


def commands_seen(server: RedisServer) -> set[str]:
    return {name.removeprefix("cmdstat_").split("|")[0] for name in server.info("commandstats")}


async def test_with_no_cap_redis_is_not_asked(ws, hub, users, own_redis, settings):
    """Nothing of the cap reaches Redis when it is 0 (the suite's default): not on connect, negotiate,
    a stream, or close. The same connections with the cap on, for comparison, do reach it."""
    settings.WS_MAX_CONNECTIONS_PER_USER = 0
    alice = users["alice"]
    comm = await ws(alice)
    await assert_usable(comm)
    await hub(alice)
    assert "connectionToken" in (await negotiate(alice))[1]
    await end_stream(await open_stream(alice))
    await comm.disconnect()
    cap_commands = {"evalsha", "eval", "script", "zadd", "zrem", "zcount", "zremrangebyscore", "zcard", "expire"}
    assert not commands_seen(own_redis) & cap_commands, commands_seen(own_redis)

    settings.WS_MAX_CONNECTIONS_PER_USER = 5
    await assert_usable(await ws(alice))
    await negotiate(alice)
    assert {"evalsha", "zcount"} <= commands_seen(own_redis)


async def test_with_redis_away_connections_are_admitted_then_counted_once_it_is_back(
    ws, users, cap, own_redis, quick_presence, monkeypatch
):
    cap(2)
    alice = users["alice"]
    own_redis.kill()  # kill -9: nothing listens on its port any more

    sockets = [await ws(alice) for _ in range(3)]
    for comm in sockets:
        await assert_usable(comm)  # over the cap, but a limit is not worth an outage
    status, answer = await negotiate(alice)
    assert status == 200 and "connectionToken" in answer, answer

    own_redis.start()
    now = time.time() + limits.PAUSE_AFTER_ERROR_SECONDS + 1  # Redis is left alone that long after it failed
    monkeypatch.setattr(limits, "clock", lambda: now)
    await until(lambda: len(held(alice)) == 3, "re-write of the three connections admitted meanwhile")
    await expect_error(await ws(alice), "too_many_connections")
    assert await negotiate(alice) == (200, {"error": refusal(2)})


async def test_connections_redis_lost_in_a_restart_are_written_again(
    ws, users, cap, own_redis, quick_presence, monkeypatch
):
    cap(3)
    alice = users["alice"]
    for _ in range(2):
        await assert_usable(await ws(alice))
    assert len(held(alice)) == 2

    own_redis.restart_after(0)  # kill -9 and start again, empty
    assert held(alice) == []
    # A write that met Redis down left it alone for a while (PAUSE_AFTER_ERROR_SECONDS): that has passed.
    now = time.time() + limits.PAUSE_AFTER_ERROR_SECONDS + 1
    monkeypatch.setattr(limits, "clock", lambda: now)

    await until(lambda: len(held(alice)) == 2, "re-write of the two connections")
    await assert_usable(await ws(alice))
    await expect_error(await ws(alice), "too_many_connections")


async def test_a_dead_process_connections_lapse_after_the_ttl(cap, monkeypatch):
    """A process killed with kill -9 never removes its members nor writes them again: they count until
    they lapse, TTL_SECONDS after its last write. Time is moved, not waited for."""
    now = [1_900_000_000.0]
    monkeypatch.setattr(limits, "clock", lambda: now[0])
    user_id = 987_654_321
    dead, live = ConnectionSlots("host-a-1-dead"), ConnectionSlots("host-b-2-live")
    try:
        assert await dead.take(user_id, dead.member("c1"), 1)
        now[0] += limits.TTL_SECONDS - 1
        assert not await live.take(user_id, live.member("c2"), 1)
        now[0] += 2
        assert await live.take(user_id, live.member("c2"), 1)
    finally:
        await dead.close()
        await live.close()


# --- SignalR stateful reconnect --------------------------------------------------------------------------------


async def test_a_stateful_resume_counts_like_any_connection(ws, hub, users, cap):
    """A dropped socket's slot went when it closed: its session, resumed, takes one again, and is
    refused (before accept: the client falls back to a fresh connection, which hears why) while the
    user holds the cap. Forcing the resume in let a client pile up sessions past the cap."""
    from channels.testing import WebsocketCommunicator

    cap(1)
    alice = users["alice"]
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    await first.comm.disconnect()  # the socket drops; the session waits for the client's return
    await until(lambda: held(alice) == [], "release of the dropped socket's slot")
    native = await ws(alice)  # the user's one connection now

    refused = WebsocketCommunicator(application, path)
    connected, _ = await refused.connect(timeout=5)

    assert not connected, "a resume past the cap is refused before accept"
    assert len(held(alice)) == 1
    await native.disconnect()
    await until(lambda: held(alice) == [], "release of the native socket's slot")
    second = await hub(alice, path=path, handshake=False)
    assert await second.next() == {"type": 9, "sequenceId": 1}  # resumed: the server's Sequence
    assert len(held(alice)) == 1
    await expect_error(await ws(alice), "too_many_connections")  # the resumed one counts


async def test_a_resume_over_the_cap_steals_nothing_from_the_socket_still_holding_the_session(ws, hub, users, cap):
    """The old socket is still open (half-open, as the server sees it) and the user at the cap: the
    resume is refused before the session is taken, so the old socket and its session carry on."""
    from channels.testing import WebsocketCommunicator

    cap(1)
    alice = users["alice"]
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)

    refused = WebsocketCommunicator(application, path)
    connected, _ = await refused.connect(timeout=5)

    assert not connected
    assert await first.quiet(), "the socket holding the session was not told to let go"
    assert len(held(alice)) == 1


async def test_a_clean_drop_frees_its_slot_before_the_session_is_saved(hub, users, cap, monkeypatch):
    """The client comes straight back with its session while the dropped socket still saves it (a
    slow Redis): the slot is already free, so the resume at the cap is admitted."""
    from channels.testing import WebsocketCommunicator

    from realtime.signalr import stateful

    cap(1)
    alice = users["alice"]
    session_id, path = await db(new_session)(alice)
    first = await started(hub, alice, path)
    saving, saved = asyncio.Event(), asyncio.Event()
    detach = stateful.StatefulSession.detach

    async def slow_detach(self, *args, **kwargs):
        saving.set()
        await saved.wait()  # Redis answering slowly, until the test lets it go
        return await detach(self, *args, **kwargs)

    monkeypatch.setattr(stateful.StatefulSession, "detach", slow_detach)
    await first.comm.send_input({"type": "websocket.disconnect", "code": 1006})
    await asyncio.wait_for(saving.wait(), TIMEOUT)

    again = WebsocketCommunicator(application, path)
    connected, _ = await again.connect(timeout=5)
    saved.set()

    assert connected, "the resume was refused: the dropped socket still held its slot"
    await again.disconnect()


async def test_a_hub_socket_over_the_cap_without_its_handshake_is_closed(ws, hub, users, cap, monkeypatch):
    from realtime.consumers import signalr as hub_consumer

    monkeypatch.setattr(hub_consumer, "HANDSHAKE_TIMEOUT_SECONDS", 0.2)
    cap(1)
    alice = users["alice"]
    await assert_usable(await ws(alice))

    silent = await hub(alice, handshake=False)  # over the cap, so not counted: it may not linger

    closed = await silent.next(timeout=TIMEOUT)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1000)


async def test_a_refresh_does_not_count_again_a_connection_released_while_it_runs(cap, monkeypatch):
    """The re-write goes out in chunks; a connection closing between two must not be written back."""
    monkeypatch.setattr(limits, "REFRESH_USERS_PER_PIPELINE", 1)
    alice, bob = await db(UserFactory)(), await db(UserFactory)()
    slots = ConnectionSlots("p")
    assert await slots.take(alice.pk, "p:a", 5) and await slots.take(bob.pk, "p:b", 5)
    run = slots._run
    calls = 0

    async def release_bob_during_the_first_chunk(op):
        nonlocal calls
        calls += 1
        if calls == 1:
            slots.release("p:b")  # bob closes while alice's chunk is out
        return await run(op)

    monkeypatch.setattr(slots, "_run", release_bob_during_the_first_chunk)
    await slots.refresh()
    await slots.close()

    assert held(alice) == ["p:a"] and held(bob) == []


async def test_a_socket_that_never_sends_its_handshake_counts_from_its_opening(ws, hub, users, cap):
    cap(1)
    alice = users["alice"]
    silent = await hub(alice, handshake=False)

    await expect_error(await ws(alice), "too_many_connections")

    await silent.comm.disconnect()
    await until(lambda: held(alice) == [], "release of the silent socket's slot")
    await assert_usable(await ws(alice))


async def test_a_consumer_cancelled_before_its_disconnect_gives_its_slot_back(ws, users, cap, monkeypatch):
    """daphne cancels an application still busy past its close timeout: no disconnect handler runs."""
    from realtime.consumers import base

    cap(2)
    alice = users["alice"]
    stuck = asyncio.Event()

    async def hang(self, campaign_id):
        stuck.set()
        await asyncio.Event().wait()  # a database that does not answer

    monkeypatch.setattr(base.RealtimeSession, "visible_campaign", hang)
    socket = await ws(alice)
    await socket.send_json_to({"type": "subscribe", "campaign_id": "camp_x"})
    await asyncio.wait_for(stuck.wait(), TIMEOUT)
    assert len(held(alice)) == 1

    socket.future.cancel()  # what daphne does after --application-close-timeout
    with contextlib.suppress(asyncio.CancelledError):
        await socket.future

    await until(lambda: held(alice) == [], "release of the cancelled consumer's slot")
    assert get_fanout().slots.members == {}
    assert get_fanout().connections == set()  # nor does the ops view count it any more


# --- what operators see ---------------------------------------------------------------------------------------


async def test_the_ops_view_shows_the_caps_the_users_with_most_connections_and_the_refusals(
    ws, users, cap, quick_presence
):
    cap(3)
    alice, bob, operator = users["alice"], users["bob"], users["operator"]
    for _ in range(3):
        await assert_usable(await ws(alice))
    await assert_usable(await ws(bob))
    await expect_error(await ws(alice), "too_many_connections")
    api = APIClient()
    api.force_authenticate(operator)
    mine = PRESENCE_PREFIX + get_fanout().process_id

    def published() -> dict[str, Any]:
        client = redis_client()
        try:
            return json.loads(client.get(mine) or "{}")
        finally:
            client.close()

    await until(lambda: published().get("refused") == limits.refusals(), "presence written after the refusal")
    overview = (await db(api.get)("/api/ops/realtime/")).json()

    assert overview["connection_caps"] == {"per_user": 3, "staff": None}
    assert published()["users"] == {str(alice.pk): 3, str(bob.pk): 1}
    rows = {row["user_id"]: row for row in overview["top_users"]}
    assert rows[alice.pk] == {"user_id": alice.pk, "username": "alice", "connections": 3, "cap": 3}
    assert rows[bob.pk] == {"user_id": bob.pk, "username": "bob", "connections": 1, "cap": 3}
    assert overview["connections_refused"] >= 1


# --- two real web processes, the real clients -------------------------------------------------------------------


class HubClients(_NodeClient):
    """hub_client.mjs ``cap``: the real @microsoft/signalr client, opening and closing hub connections
    on the test's word."""

    def __init__(self, server, user) -> None:  # NodeClient's, with stdin
        env = {**os.environ, "BASE_URL": server.url, "HUB_USERNAME": user.username, "HUB_PASSWORD": PASSWORD}
        self.process = subprocess.Popen(
            ["node", str(SCRIPT), "cap"],
            cwd=JS_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.expect("ready", TIMEOUT)

    def say(self, command: str) -> dict[str, Any]:
        """One command; its answer (opened, refused, closed)."""
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        try:
            line = self.lines.get(timeout=TIMEOUT)
        except queue.Empty:
            line = {"event": "timeout"}
        assert line is not None and line["event"] in ("opened", "refused", "closed"), f"{line}\n{self.log()}"
        return line

    def stop(self) -> None:
        """Its connections stopped as a client stops them; killed if it will not go."""
        try:
            if self.process.poll() is None:
                self.process.stdin.write("exit\n")
                self.process.stdin.flush()
                self.expect("done", TIMEOUT)
        finally:
            self.kill()


def native(opened: contextlib.ExitStack, server, user) -> ClientConnection:
    url = f"{server.ws_url}/ws/campaigns/?access_token={token_for(user)}"
    return opened.enter_context(connect(url, open_timeout=TIMEOUT))


def answer_to_ping(socket) -> dict[str, Any]:
    socket.send(json.dumps({"type": "ping"}))
    return json.loads(socket.recv(TIMEOUT))


def ops_view(server, operator) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/ops/realtime/", headers=bearer(operator), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def bearer(user) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


@pytest.mark.e2e
def test_one_cap_across_two_web_processes_and_every_transport(start_web):
    """Three connections for alice, alternating between two processes and mixing the transports; the
    fourth is refused, in its transport's way, on whichever process it reaches."""
    if not shutil.which("node") or not (JS_DIR / "node_modules" / "@microsoft" / "signalr").is_dir():
        pytest.fail("needs Node.js and `npm ci` in realtime/tests/js_signalr (make test does both)")
    a, b = start_web(WS_MAX_CONNECTIONS_PER_USER="3"), start_web(WS_MAX_CONNECTIONS_PER_USER="3")
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    operator = UserFactory(username="charlie", is_staff=True, is_superuser=True)
    with contextlib.ExitStack() as opened:
        signalr = HubClients(a, alice)
        opened.callback(signalr.stop)
        assert answer_to_ping(native(opened, a, alice)) == {"type": "pong"}  # 1: native, on A
        stream = EventStream(f"{b.url}/api/account/stream/", bearer(alice))  # 2: an event stream, on B
        opened.callback(stream.close)
        assert stream.response.status_code == 200
        assert signalr.say(f"open {a.url}")["event"] == "opened"  # 3: a hub, on A

        fourth = native(opened, b, alice)  # 4th, native, on B: an error frame, then 1008
        refused = json.loads(fourth.recv(TIMEOUT))
        assert refused == {"type": "error", "code": "too_many_connections", "message": refusal(3)}
        with pytest.raises(ConnectionClosed) as closed:
            fourth.recv(TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        response = httpx.get(f"{a.url}/api/account/stream/", headers=bearer(alice), timeout=TIMEOUT)  # SSE, on A
        assert (response.status_code, response.headers["Retry-After"]) == (429, "10")
        assert response.json() == {"detail": refusal(3)}
        assert signalr.say(f"open {b.url}") == {  # a hub on B: start() fails with negotiate's error
            "event": "refused",
            "server": b.url,
            "error": refusal(3),
            "state": "Disconnected",
        }
        skipped = signalr.say(f"open-skip {a.url}")  # no negotiate, on A: the handshake's error
        assert skipped["event"] == "refused"
        assert skipped["error"] == f"Server returned handshake error: {refusal(3)}"

        assert answer_to_ping(native(opened, b, bob)) == {"type": "pong"}, "another user is not affected"

        pids = (f"-{a.process.pid}-", f"-{b.process.pid}-")
        deadline = time.monotonic() + TIMEOUT
        while True:  # polling the processes' presence, written every 10 s
            overview = ops_view(b, operator)
            rows = {row["username"]: row for row in overview["top_users"]}
            ours = [p for p in overview["processes"] if any(pid in p["process"] for pid in pids)]
            if rows.get("alice", {}).get("connections") == 3 and sum(p["refused"] for p in ours) == 4:
                break
            assert time.monotonic() < deadline, overview
            time.sleep(0.2)
        assert rows["alice"] == {"user_id": alice.pk, "username": "alice", "connections": 3, "cap": 3}
        assert rows["bob"]["connections"] == 1
        assert overview["connection_caps"] == {"per_user": 3, "staff": None}

        assert signalr.say("close") == {"event": "closed"}  # alice's hub on A goes
        deadline = time.monotonic() + TIMEOUT
        while (answer := signalr.say(f"open {b.url}"))["event"] != "opened":  # until B hears of it
            assert time.monotonic() < deadline, answer
            time.sleep(0.05)
    for server in (a, b):  # a refusal is the client's lot, never a stack trace in the server's log
        assert "Traceback" not in server.log(), server.log()[-3000:]
