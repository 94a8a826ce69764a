"""PostgreSQL restarted mid-run (PROTOCOL.md §9), end to end: real daphne, a real Celery worker with
its beat, and the suite's own PostgreSQL stopped (``pg_ctl stop -m fast``: every connection is cut)
and started again while a step streams.

What a user observes: while the database is away, the API answers 503 with a JSON ``detail`` and a
``Retry-After`` (never a 500 or a stack trace) and stores nothing; as soon as it is back, requests
succeed again on the first try; the interrupted step is taken over and the run completes with one
artifact of each type; a WebSocket client that stayed connected, and one that dropped and resumed
with its last sequence, both end with exactly 1..N.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import connections
from rest_framework_simplejwt.tokens import AccessToken

from campaigns.tests.factories import CampaignFactory, UserFactory
from eventlog.models import CampaignEvent
from marketing_agents.errors import DATABASE_DOWN, RETRY_AFTER_SECONDS
from marketing_agents.tests.processes import restart_postgres
from orchestration.models import Artifact, OrchestrationRun

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

db = database_sync_to_async

OUTAGE_SECONDS = 2
# What a process logs when it meets the database away, or uses a connection the restart cut
# (psycopg 3's messages, and psycopg 2's "connection already closed"): never once PostgreSQL is back.
DATABASE_ERRORS = (
    "OperationalError",
    "InterfaceError",
    "connection already closed",
    "the connection is closed",
    "the connection is lost",
    "terminating connection due to administrator command",
    "server closed the connection unexpectedly",
    "head check failed",
)


@pytest.fixture
def postgres(transactional_db):
    """Restarts the suite's PostgreSQL. The restart also cuts this process's own connections: the
    main thread's is closed after the test (pytest-django flushes the database through it), the
    test closes the executor thread's itself before it touches the ORM again."""
    yield restart_postgres
    connections.close_all()


def bearer(user) -> dict[str, str]:
    return {"Authorization": f"Bearer {AccessToken.for_user(user)}"}


class Follower:
    """A native WebSocket client following one campaign until ``campaign.completed``: it records every
    durable event and when it arrived. Should its socket close, it reconnects and resumes with the
    last sequence it has (``last_sequence``), as the browser client does."""

    def __init__(self, server, user, campaign_id: str) -> None:
        self.url = f"{server.ws_url}/ws/campaigns/?access_token={AccessToken.for_user(user)}"
        self.campaign_id = campaign_id
        self.events: list[dict] = []
        self.arrived: list[float] = []  # time.monotonic() of each durable event
        self.chunks: list[dict] = []
        self.reconnects = 0
        self.ws = None
        self.task: asyncio.Task | None = None

    @property
    def last_sequence(self) -> int:
        return self.events[-1]["sequence"] if self.events else 0

    async def start(self, **resume) -> None:
        await self._subscribe(**resume)
        self.task = asyncio.create_task(self._follow())

    async def drop(self) -> None:
        """The client's network goes away: no close handshake, and it stops reading."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.ws.transport.abort()

    async def resume(self) -> None:
        """Come back after a drop: one attempt, which must work."""
        await self.start(last_sequence=self.last_sequence)

    async def _subscribe(self, **resume) -> None:
        self.ws = await websockets.connect(self.url, max_size=None, open_timeout=5)
        await self.ws.send(json.dumps({"type": "subscribe", "campaign_id": self.campaign_id, **resume}))
        answer = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert answer["type"] == "subscribed", answer

    async def _follow(self) -> None:
        while True:
            try:
                frame = json.loads(await self.ws.recv())
            except websockets.ConnectionClosed:
                await self._reconnect()
                continue
            if frame["type"] != "event":
                continue
            if "sequence" not in frame:
                self.chunks.append(frame)
                continue
            self.events.append(frame)
            self.arrived.append(time.monotonic())
            if frame["event"] == "campaign.completed":
                await self.ws.close()
                return

    async def _reconnect(self) -> None:
        self.reconnects += 1
        while True:  # bounded by the caller's wait_for on the task
            try:
                return await self._subscribe(last_sequence=self.last_sequence)
            except (OSError, websockets.WebSocketException, AssertionError):  # TimeoutError is an OSError
                await asyncio.sleep(0.2)  # back off between attempts while the server recovers

    async def until(self, condition, what: str, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until ``condition(self)`` holds."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if self.task.done():
                self.task.result()  # raises what stopped it
                raise AssertionError(f"the follower stopped before {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; got {[e['event'] for e in self.events]}")
            await asyncio.sleep(0.02)

    async def finished(self, timeout: float) -> list[dict]:
        await asyncio.wait_for(self.task, timeout)
        return self.events


def streaming_copy(follower: Follower) -> bool:
    return any(chunk["data"]["artifact_type"] == "Copy" for chunk in follower.chunks)


async def poll(api: httpx.AsyncClient, path: str, status: int, timeout: float) -> float:
    """GET ``path`` until it answers ``status``; returns when it did (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while True:
        response = await api.get(path)
        if response.status_code == status:
            return time.monotonic()
        assert time.monotonic() < deadline, f"{path} still {response.status_code} after {timeout} s"
        await asyncio.sleep(0.05)


def assert_database_down(response: httpx.Response) -> None:
    request = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == 503, (request, response.status_code, response.text)
    assert response.headers["Content-Type"] == "application/json", request
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS), request
    assert response.json() == {"detail": DATABASE_DOWN}, request


def stored_sequences(campaign) -> list[int]:
    return list(CampaignEvent.objects.filter(campaign=campaign).order_by("sequence").values_list("sequence", flat=True))


def artifact_types(run_id: str) -> list[str]:
    return sorted(Artifact.objects.filter(run__public_id=run_id).values_list("type", flat=True))


async def test_postgres_restarted_mid_run_503_during_the_outage_then_the_run_completes(
    start_web, start_worker, postgres
):
    server, other_server = start_web(), start_web()
    # The copy streams for about two seconds (chunks 40 ms apart): the restart lands inside the step.
    worker = start_worker(AGENT_CHUNK_DELAY_MS="40")
    processes = {"daphne": server, "the other daphne": other_server, "worker": worker}
    alice = await db(UserFactory)(username="alice")
    campaign = await db(CampaignFactory)(owner=alice)
    other = await db(CampaignFactory)(owner=alice)
    # One client stays connected through the outage. The other, on another web process, loses its
    # network just before it and comes back once PostgreSQL is up: that process's long-lived database
    # thread (sockets, log reads) sat idle through the restart, holding a connection the restart cut.
    stays = Follower(server, alice, campaign.public_id)
    drops = Follower(other_server, alice, campaign.public_id)
    await stays.start()
    await drops.start()

    async with httpx.AsyncClient(base_url=server.url, headers=bearer(alice), timeout=10) as api:
        started = await api.post(f"/api/campaigns/{campaign.public_id}/runs/", json={})
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        await stays.until(streaming_copy, "Copy chunk", 30)
        await drops.until(streaming_copy, "Copy chunk", 30)
        await drops.drop()

        # PostgreSQL goes away while the copywriter streams.
        restart = asyncio.create_task(asyncio.to_thread(postgres, down_for=OUTAGE_SECONDS))
        down_at = await poll(api, "/readyz", 503, timeout=15)
        in_window = await asyncio.gather(
            api.get(f"/api/campaigns/{campaign.public_id}/"),
            api.get(f"/api/runs/{run_id}/"),
            api.get(f"/api/campaigns/{campaign.public_id}/events/"),
            api.post(f"/api/campaigns/{other.public_id}/runs/", json={}),
        )
        answered_at = time.monotonic()
        assert not restart.done(), "the requests were all answered inside the outage"
        for response in in_window:
            assert_database_down(response)

        await asyncio.wait_for(restart, 60)
        back_at = time.monotonic()
        logs_at = {name: len(process.log()) for name, process in processes.items()}
        await sync_to_async(connections.close_all)()  # the executor thread's connection died with the restart

        # Back: the very first requests succeed, on every path the outage touched.
        after = await asyncio.gather(
            api.get(f"/api/campaigns/{campaign.public_id}/"),
            api.get(f"/api/runs/{run_id}/"),
            api.get(f"/api/campaigns/{campaign.public_id}/events/"),
            api.get(f"/api/campaigns/{other.public_id}/runs/"),
            api.get("/readyz"),
        )
        for response in after:
            assert response.status_code == 200, (response.request.url.path, response.status_code, response.text)
        assert after[3].json()["count"] == 0, "the run refused during the outage was not stored"
        await drops.resume()

        stayed, resumed = await stays.finished(timeout=90), await drops.finished(timeout=90)
        finished = await api.get(f"/api/runs/{run_id}/")
    assert finished.status_code == 200 and finished.json()["state"] == "completed", finished.text

    progressing_at = next(t for t in stays.arrived if t > back_at)
    print(
        f"\nin the window ({answered_at - down_at:.2f} s after /readyz saw the database down): "
        f"{[r.status_code for r in in_window]}; after the restart: {[r.status_code for r in after]}; "
        f"first event {progressing_at - back_at:.2f} s after PostgreSQL was back; "
        f"completed {stays.arrived[-1] - back_at:.2f} s after; reconnects: {stays.reconnects}"
    )

    sequences = [e["sequence"] for e in stayed]
    assert sequences == list(range(1, len(sequences) + 1)), "exactly 1..N, in order, nothing twice"
    assert sequences == await db(stored_sequences)(campaign), "the client saw exactly the stored log"
    assert [e["sequence"] for e in resumed] == sequences, "the client that dropped resumed with exactly what it missed"
    copy_attempts = [
        e["data"]["attempt"] for e in stayed if e["event"] == "step.started" and e["data"]["step"] == "Copy"
    ]
    assert copy_attempts == [1, 2], "the interrupted step was taken over once"
    assert await db(artifact_types)(run_id) == ["Copy", "ShortCopy", "Visual"], "one artifact per type"
    run = await db(OrchestrationRun.objects.get)(public_id=run_id)
    assert run.state == "completed"

    assert "database unavailable: OperationalError" in server.log(), "the outage was logged as a warning"
    for name, process in processes.items():
        log = process.log()
        if name != "worker":
            assert "Traceback" not in log, f"{name}: {log[-3000:]}"
        assert "connection already closed" not in log, f"{name}: {log[-3000:]}"
        met = [error for error in DATABASE_ERRORS if error in log[logs_at[name] :]]
        assert not met, f"{name} met {met} after PostgreSQL was back:\n{log[logs_at[name] :][-3000:]}"
        assert process.process.poll() is None, f"{name} rode out the restart"


async def test_a_socket_opened_while_postgres_is_down_is_refused_cleanly_then_served(start_web, postgres):
    """A client that (re)connects during the outage is told to try again (HTTP 503, or an ``error``
    frame and close 1013), never an HTTP 500; its retry once PostgreSQL is back is served."""
    server = start_web()
    alice = await db(UserFactory)(username="alice")
    campaign = await db(CampaignFactory)(owner=alice)
    url = f"{server.ws_url}/ws/campaigns/?access_token={AccessToken.for_user(alice)}"
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
        restart = asyncio.create_task(asyncio.to_thread(postgres, down_for=OUTAGE_SECONDS))
        await poll(api, "/readyz", 503, timeout=15)
        try:
            async with websockets.connect(url, open_timeout=5) as ws:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
            refusal = (frame["type"], closed.value.rcvd.code if closed.value.rcvd else None)
        except websockets.InvalidStatus as exc:
            refusal = exc.response.status_code
        assert not restart.done(), "the handshake was answered inside the outage"
        await asyncio.wait_for(restart, 60)
    await sync_to_async(connections.close_all)()

    async with websockets.connect(url, open_timeout=5) as ws:
        await ws.send(json.dumps({"type": "subscribe", "campaign_id": campaign.public_id}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
    assert refusal in (503, ("error", 1013)), f"refused with {refusal}"
    assert "Traceback" not in server.log(), server.log()[-3000:]
