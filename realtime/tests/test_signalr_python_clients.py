"""The Python SignalR clients of record, ``pysignalr`` and ``signalrcore``, unchanged, against the real
stack: daphne (marketing_agents.serve), a Celery worker, Redis and PostgreSQL (docs/SIGNALR.md,
"Python clients"). Each client, through its own API: negotiate and connect with a JWT, both method
families over a whole run started through the REST API, the documented errors, and its own
automatic reconnect after the connection is cut, then a resume with ``lastSequence`` that brings
exactly the missed events.

Both clients run on threads of their own (pysignalr on an asyncio loop, signalrcore on its socket
threads); everything they see goes into a queue the test reads with timeouts.
"""

from __future__ import annotations

import asyncio
import json
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from campaigns.tests.factories import CampaignFactory, UserFactory
from eventlog.models import CampaignEvent
from eventlog.publisher import publish
from orchestration.models import OrchestrationRun

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ARTIFACT_TYPES = {"Copy", "ShortCopy", "Visual"}
TASK012_EVENTS = ("ReceiveOrchestrationEvent", "ReceiveArtifactUpdate", "ReceiveCampaignSnapshot")
REALTIME_API_EVENTS = (
    "OnCampaignStarted",
    "OnChunkReceived",
    "OnArtifactGenerated",
    "OnComplianceCheckCompleted",
    "OnCampaignCompleted",
    "OnGenerationFailed",
    "OnCampaignStatusReceived",
)
CLIENTS = ["pysignalr", "signalrcore"]


def token_for(user) -> str:
    return str(AccessToken.for_user(user))


def start_run(base_url: str, token: str, campaign) -> str:
    """POST /api/campaigns/{id}/runs/, as a user would."""
    request = urllib.request.Request(
        f"{base_url}/api/campaigns/{campaign.public_id}/runs/",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        return json.loads(response.read())["id"]


class Seen:
    """What a client saw, in order: ("event", target, arguments), ("open",), ("closed",), ..."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.history: list[tuple[Any, ...]] = []

    def put(self, *item: Any) -> None:
        self.queue.put(item)

    def expect(self, check, what: str, timeout: float = 30) -> tuple[Any, ...]:
        """Items until one that ``check`` accepts; fails after ``timeout`` seconds or if the client died."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout} s; last seen: {self.history[-15:]}")
            try:
                item = self.queue.get(timeout=remaining)
            except queue.Empty:
                continue
            self.history.append(item)
            if item[0] == "died":
                raise AssertionError(f"the client died waiting for {what}: {item[1]}; seen: {self.history[-15:]}")
            if check(item):
                return item

    def event(self, target: str, timeout: float = 30) -> list[Any]:
        return self.expect(lambda item: item[:2] == ("event", target), target, timeout)[2]

    def events_until(self, target: str, timeout: float = 120) -> list[tuple[str, list[Any]]]:
        """Every client-method call up to and including the first ``target`` call."""
        start = len(self.history)
        self.event(target, timeout)
        return [(item[1], item[2]) for item in self.history[start:] if item[0] == "event"]

    def quiet(self, seconds: float) -> list[tuple[Any, ...]]:
        """Whatever arrives within ``seconds`` (used to show that nothing more comes)."""
        arrived = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                arrived.append(self.queue.get(timeout=remaining))
            except queue.Empty:
                break
        self.history.extend(arrived)
        return [item for item in arrived if item[0] == "event"]


class Completion:
    def __init__(self, result: Any = None, error: str | None = None) -> None:
        self.result, self.error = result, error


# --- the two clients, each through its own API ------------------------------------------------------------------


class PySignalR:
    """pysignalr.client.SignalRClient on an asyncio loop in a thread. The bearer goes in ``headers``:
    pysignalr calls ``access_token_factory`` only after negotiate, which then fails with 401."""

    def __init__(self, url: str, token: str, events: tuple[str, ...]) -> None:
        from pysignalr.client import SignalRClient

        self.seen = Seen()
        self.loop = asyncio.new_event_loop()
        self.client = SignalRClient(
            f"{url}/hubs/campaign", headers={"Authorization": f"Bearer {token}"}, connection_timeout=10
        )
        for target in events:
            self.client.on(target, self._handler(target))

        async def opened() -> None:
            self.seen.put("open")

        async def closed() -> None:
            self.seen.put("closed")

        async def error(message) -> None:  # every Completion error also reaches invoke() below
            self.seen.put("error", message.error)

        self.client.on_open(opened)
        self.client.on_close(closed)
        self.client.on_error(error)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _handler(self, target: str):
        async def handler(arguments: list[Any]) -> None:
            self.seen.put("event", target, arguments)

        return handler

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.client.run())
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            self.seen.put("died", repr(exc))
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def invoke(self, method: str, *arguments: Any, timeout: float = 30) -> Completion:
        async def call():
            answered = asyncio.get_running_loop().create_future()

            async def on_completion(message) -> None:
                if not answered.done():
                    answered.set_result(message)

            await self.client.send(method, list(arguments), on_completion)
            return await asyncio.wait_for(answered, timeout)

        message = asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout + 5)
        return Completion(getattr(message, "result", None), message.error or None)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.task.cancel)
            self.thread.join(10)


class SignalRCore:
    """signalrcore's HubConnectionBuilder with ``access_token_factory`` and its automatic reconnect."""

    def __init__(self, url: str, token: str, events: tuple[str, ...]) -> None:
        from signalrcore.hub_connection_builder import HubConnectionBuilder

        self.seen = Seen()
        self.answers: dict[str, queue.Queue[Completion]] = {}
        self.connection = (
            HubConnectionBuilder()
            .with_url(f"{url}/hubs/campaign", options={"access_token_factory": lambda: token})
            .with_automatic_reconnect({"type": "raw", "keep_alive_interval": 10, "reconnect_interval": 1})
            .build()
        )
        for target in events:
            self.connection.on(target, self._handler(target))
        self.connection.on_open(lambda: self.seen.put("open"))
        self.connection.on_reconnect(lambda: self.seen.put("open"))
        self.connection.on_close(lambda: self.seen.put("closed"))
        self.connection.on_error(self._on_error)
        self.connection.start()

    def _handler(self, target: str):
        return lambda arguments: self.seen.put("event", target, arguments)

    def _on_error(self, message) -> None:  # signalrcore reports Completion errors here only
        self.seen.put("error", message.error)
        self.answers.setdefault(message.invocation_id, queue.Queue()).put(Completion(error=message.error))

    def invoke(self, method: str, *arguments: Any, timeout: float = 30) -> Completion:
        invocation_id = f"{method}-{time.monotonic_ns()}"
        answers = self.answers.setdefault(invocation_id, queue.Queue())
        self.connection.invoke(
            method,
            list(arguments),
            on_invocation=lambda message: answers.put(Completion(message.result)),
            invocation_id=invocation_id,
        )
        try:
            return answers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer to {method} within {timeout} s; seen: {self.seen.history[-15:]}") from None

    def stop(self) -> None:
        self.connection.stop()


def connect(kind: str, url: str, token: str, events: tuple[str, ...] = TASK012_EVENTS + REALTIME_API_EVENTS):
    client = (PySignalR if kind == "pysignalr" else SignalRCore)(url, token, events)
    client.seen.expect(lambda item: item[0] == "open", "the connection", timeout=30)
    return client


@pytest.fixture
def python_clients():
    clients: list[Any] = []

    def start(kind: str, url: str, token: str, **kwargs: Any):
        client = connect(kind, url, token, **kwargs)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.stop()


class CuttableLink:
    """A TCP relay between the clients and daphne whose connections the test can cut at once (as a
    network drop or a load balancer restart does); new connections go through, the server stays up."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.links: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            upstream.settimeout(None)
            with self.lock:
                self.links.append((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> int:
        with self.lock:
            links, self.links = self.links, []
        for pair in links:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        return len(links)

    def close(self) -> None:
        self.listener.close()
        self.cut()


def log_sequences(campaign) -> list[int]:
    return list(CampaignEvent.objects.filter(campaign=campaign).order_by("sequence").values_list("sequence", flat=True))


# --- the tests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
def test_both_method_families_see_a_whole_run_started_through_the_api(kind, start_web, start_worker, python_clients):
    server = start_web()
    start_worker()
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(owner=alice)
    token = token_for(alice)
    task012 = python_clients(kind, server.url, token, events=TASK012_EVENTS)
    seed = python_clients(kind, server.url, token, events=REALTIME_API_EVENTS)

    snapshot = task012.invoke("GetCampaignSnapshot", campaign.public_id)
    assert snapshot.error is None
    assert snapshot.result["campaignId"] == campaign.public_id and snapshot.result["lastEventSequence"] == 0
    assert task012.invoke("SubscribeToCampaign", campaign.public_id).error is None
    assert seed.invoke("JoinCampaignGroup", campaign.public_id).error is None
    run_id = start_run(server.url, token, campaign)

    # task-012: every durable event in order, with contiguous sequences, ending with the completion.
    calls = []
    while True:
        target, arguments = task012.seen.expect(lambda item: item[0] == "event", "a task-012 event", timeout=120)[1:]
        calls.append((target, arguments))
        if target == "ReceiveOrchestrationEvent" and arguments[0]["event"] == "campaign.completed":
            break
    events = [arguments[0] for target, arguments in calls if target == "ReceiveOrchestrationEvent"]
    durable = [evt for evt in events if "sequence" in evt]
    assert [evt["sequence"] for evt in durable] == list(range(1, len(durable) + 1))
    names = [evt["event"] for evt in durable]
    assert names.index("campaign.started") < names.index("artifact.generated") < names.index("compliance.completed")
    assert names[-1] == "campaign.completed" and "generation.failed" not in names
    assert all(evt["campaignId"] == campaign.public_id and evt["runId"] == run_id for evt in durable)
    updates = [arguments[0] for target, arguments in calls if target == "ReceiveArtifactUpdate"]
    assert {update["artifact"]["type"] for update in updates} == ARTIFACT_TYPES
    assert [evt["sequence"] for evt in durable] == log_sequences(campaign)

    # realtime-api: the seed's client methods, in the order a user watches them.
    calls = seed.seen.events_until("OnCampaignCompleted", timeout=60)
    names = [target for target, _ in calls]
    assert names[0] == "OnCampaignStarted" and calls[0][1] == [campaign.public_id]
    assert names[-1] == "OnCampaignCompleted" and calls[-1][1] == [campaign.public_id]
    assert "OnGenerationFailed" not in names
    artifacts = [arguments[0] for target, arguments in calls if target == "OnArtifactGenerated"]
    assert {artifact["type"] for artifact in artifacts} == ARTIFACT_TYPES
    chunks = [arguments[0] for target, arguments in calls if target == "OnChunkReceived"]
    copy = "".join(chunk["chunk"] for chunk in chunks if chunk["artifactType"] == "Copy")
    assert copy == next(artifact["content"] for artifact in artifacts if artifact["type"] == "Copy")
    assert names.index("OnChunkReceived") < names.index("OnArtifactGenerated")
    assert names.count("OnComplianceCheckCompleted") == 1
    last_artifact = max(i for i, name in enumerate(names) if name == "OnArtifactGenerated")
    assert last_artifact < names.index("OnComplianceCheckCompleted") < len(names) - 1
    OrchestrationRun.objects.get(public_id=run_id)  # the run the API started is the one watched


@pytest.mark.parametrize("kind", CLIENTS)
def test_errors_are_the_documented_ones_and_the_connection_stays_usable(kind, start_web, python_clients):
    server = start_web()
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    mine, bobs = CampaignFactory(owner=alice), CampaignFactory(owner=bob)
    client = python_clients(kind, server.url, token_for(alice))

    for method in ("SubscribeToCampaign", "JoinCampaignGroup", "GetCampaignSnapshot"):
        assert client.invoke(method, bobs.public_id).error == "Campaign not found."
        assert client.invoke(method, "camp_doesnotexist").error == "Campaign not found."
    assert client.invoke("NoSuchMethod").error == "Unknown hub method 'NoSuchMethod'."
    assert client.invoke("JoinCampaignGroup").error == "JoinCampaignGroup takes 1 or 2 arguments; got 0."
    assert client.invoke("SubscribeToCampaign", mine.public_id, -1).error.startswith(
        "The lastSequence argument of SubscribeToCampaign must be a non-negative integer"
    )
    assert client.invoke("CancelRun", "run_doesnotexist").error == "Run not found."
    # Still connected and working after every error.
    assert client.invoke("JoinCampaignGroup", mine.public_id).error is None
    publish(mine, "campaign.completed", {"run_id": None})
    assert client.seen.event("OnCampaignCompleted") == [mine.public_id]
    assert ("closed",) not in client.seen.history
    assert "Traceback" not in server.log()


def test_pysignalr_with_a_bad_token_is_refused_at_negotiate(start_web):
    from pysignalr.client import SignalRClient
    from pysignalr.exceptions import AuthorizationError

    server = start_web()
    client = SignalRClient(
        f"{server.url}/hubs/campaign", headers={"Authorization": "Bearer not-a-token"}, retry_count=1
    )
    with pytest.raises(AuthorizationError):  # negotiate answered 401
        asyncio.run(asyncio.wait_for(client.run(), 30))


def test_signalrcore_with_a_bad_token_is_refused_at_negotiate(start_web):
    from signalrcore.hub_connection_builder import HubConnectionBuilder

    server = start_web()
    connection = (
        HubConnectionBuilder()
        .with_url(f"{server.url}/hubs/campaign", options={"access_token_factory": lambda: "not-a-token"})
        .build()
    )
    with pytest.raises(urllib.error.HTTPError) as refused:  # signalrcore lets urllib's error through
        connection.start()
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["error"].startswith("Authentication required")


@pytest.mark.parametrize("kind", CLIENTS)
def test_the_clients_own_reconnect_then_last_sequence_brings_exactly_the_missed_events(kind, start_web, python_clients):
    server = start_web()
    link = CuttableLink(server.port)
    client = None
    try:
        alice = UserFactory(username="alice")
        campaign = CampaignFactory(owner=alice)
        client = python_clients(kind, link.url, token_for(alice), events=TASK012_EVENTS)
        assert client.invoke("SubscribeToCampaign", campaign.public_id).error is None
        for percentage in (1, 2, 3):
            publish(campaign, "progress", {"percentage": percentage, "message": f"at {percentage}%"})
        seen = [client.seen.event("ReceiveOrchestrationEvent")[0]["sequence"] for _ in range(3)]
        assert seen == [1, 2, 3]
        last_sequence = seen[-1]

        assert link.cut() >= 1  # the WebSocket is cut; the server stays up
        publish(campaign, "progress", {"percentage": 4, "message": "while cut"})
        client.seen.expect(lambda item: item[0] == "open", "the client's own reconnect", timeout=60)
        publish(campaign, "progress", {"percentage": 5, "message": "reconnected, not yet resubscribed"})

        # Groups are not kept across a reconnect: resubscribe with the last sequence seen.
        assert client.invoke("SubscribeToCampaign", campaign.public_id, last_sequence).error is None
        replayed = [client.seen.event("ReceiveOrchestrationEvent")[0] for _ in range(2)]
        assert [evt["sequence"] for evt in replayed] == [4, 5]
        assert all(evt["replayed"] is True for evt in replayed)
        publish(campaign, "campaign.completed", {"run_id": None})
        live = client.seen.event("ReceiveOrchestrationEvent")[0]
        assert live["sequence"] == 6 and live["event"] == "campaign.completed" and "replayed" not in live
        assert client.seen.quiet(0.5) == []  # nothing twice
    finally:
        if client is not None:
            client.stop()  # before the link goes: a client that lost it would try to reconnect
        link.close()
    assert "Traceback" not in server.log()


def test_pysignalr_reconnects_by_itself_after_the_web_process_is_killed_and_restarted(start_web, python_clients):
    """kill -9 of daphne, a new one on the same port: pysignalr's own reconnect (to the URL of its
    first negotiate) gets through, and a resume brings exactly the event published meanwhile."""
    from marketing_agents.tests.processes import WebServer

    server = start_web()
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(owner=alice)
    client = python_clients("pysignalr", server.url, token_for(alice), events=TASK012_EVENTS)
    assert client.invoke("SubscribeToCampaign", campaign.public_id).error is None
    publish(campaign, "progress", {"percentage": 1, "message": "before"})
    assert client.seen.event("ReceiveOrchestrationEvent")[0]["sequence"] == 1

    server.kill()
    publish(campaign, "progress", {"percentage": 2, "message": "while the server is down"})
    replacement = WebServer(server.log_path.parent, port=server.port).start()
    try:
        client.seen.expect(lambda item: item[0] == "open", "pysignalr's own reconnect", timeout=60)
        assert client.invoke("SubscribeToCampaign", campaign.public_id, 1).error is None
        missed = client.seen.event("ReceiveOrchestrationEvent")[0]
        assert missed["sequence"] == 2 and missed["replayed"] is True
        publish(campaign, "campaign.completed", {"run_id": None})
        assert client.seen.event("ReceiveOrchestrationEvent")[0]["sequence"] == 3
        client.stop()
    finally:
        replacement.stop()
    assert "Traceback" not in replacement.log()


def test_pysignalr_run_ends_with_the_servers_reason_when_the_server_shuts_down(start_web, python_clients):
    """What docs/SIGNALR.md tells pysignalr users: a Close message with an error (here the shutdown's,
    which allows a reconnect) ends ``run()`` with ServerError, so they start a new client."""
    server = start_web()
    alice = UserFactory(username="alice")
    client = python_clients("pysignalr", server.url, token_for(alice))
    assert client.invoke("JoinCampaignGroup", "camp_missing").error == "Campaign not found."  # the session is up
    server.stop()
    items = []
    deadline = time.monotonic() + 30
    while not items or items[-1][0] != "died":
        try:
            items.append(client.seen.queue.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"run() did not end: {items}\n{server.log()[-3000:]}") from None
    assert items[-1][1] == "ServerError(message='The server is shutting down.')"
