"""A web process killed (kill -9) while another serves (PROTOCOL.md §9): its clients, native and
SignalR, reconnect to the other process and resume with exactly what they missed. Two real daphne
processes with no balancer and no sticky sessions, a Celery worker, Redis, PostgreSQL; the SignalR
client is the real ``@microsoft/signalr`` (js_signalr/hub_client.mjs, scenario ``failover``)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
import time
import urllib.request
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from campaigns.tests.factories import PASSWORD, CampaignFactory, UserFactory
from eventlog.models import CampaignEvent
from realtime.tests.test_signalr_client import JS_DIR, SCRIPT, _node_and_the_signalr_client  # noqa: F401
from realtime.tests.test_signalr_client import NodeClient as _NodeClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT = 30  # seconds: the bound of every wait for one condition


def token_for(user) -> str:
    from rest_framework_simplejwt.tokens import AccessToken

    return str(AccessToken.for_user(user))


class FailoverClient(_NodeClient):
    """hub_client.mjs ``failover`` across ``servers``, held after a disconnect until ``release()``."""

    def __init__(self, servers, user, campaign) -> None:  # NodeClient's, with stdin and BASE_URLS
        env = {
            **os.environ,
            "BASE_URLS": ",".join(server.url for server in servers),
            "HUB_USERNAME": user.username,
            "HUB_PASSWORD": PASSWORD,
            "CAMPAIGN_ID": campaign.public_id,
            "FAILOVER_HOLD": "1",
        }
        self.process = subprocess.Popen(
            ["node", str(SCRIPT), "failover"],
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

    def expect_event(self, name: str) -> dict[str, Any]:
        """Lines until the durable event ``name`` arrives."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            line = self.expect("ReceiveOrchestrationEvent", timeout=max(0.01, deadline - time.monotonic()))
            if line["name"] == name:
                return line

    def release(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def events(self) -> list[dict[str, Any]]:
        return [line for line in self.seen if line["event"] == "ReceiveOrchestrationEvent"]


class NativeClient:
    """A native WebSocket client (PROTOCOL.md §5) that keeps every durable event frame it receives."""

    def __init__(self, server, user) -> None:
        self.user = user
        self.events: list[dict[str, Any]] = []
        self.connections = contextlib.ExitStack()
        self.connect(server)

    def connect(self, server) -> None:
        url = f"{server.ws_url}/ws/campaigns/?access_token={token_for(self.user)}"
        self.ws: ClientConnection = self.connections.enter_context(connect(url, max_size=None, open_timeout=TIMEOUT))

    def subscribe(self, campaign, **extra: Any) -> dict[str, Any]:
        self.ws.send(json.dumps({"type": "subscribe", "campaign_id": campaign.public_id, **extra}))
        answer = json.loads(self.ws.recv(TIMEOUT))
        assert answer["type"] == "subscribed", answer
        return answer

    def until(self, name: str) -> list[dict[str, Any]]:
        """Durable events up to and including ``name`` (chunks are skipped)."""
        deadline, received = time.monotonic() + TIMEOUT, []
        while True:
            frame = json.loads(self.ws.recv(max(0.01, deadline - time.monotonic())))
            assert frame["type"] != "snapshot", f"no resync expected: {frame}"
            if frame["type"] == "event" and "sequence" in frame:
                received.append(frame)
                self.events.append(frame)
                if frame["event"] == name:
                    return received

    def until_closed(self) -> None:
        """What the dead server had already sent, up to the connection's end."""
        deadline = time.monotonic() + TIMEOUT
        with pytest.raises(ConnectionClosed):
            while time.monotonic() < deadline:
                frame = json.loads(self.ws.recv(max(0.01, deadline - time.monotonic())))
                if frame["type"] == "event" and "sequence" in frame:
                    self.events.append(frame)

    def close(self) -> None:
        self.connections.close()


def start_run(server, user, campaign) -> str:
    request = urllib.request.Request(
        f"{server.url}/api/campaigns/{campaign.public_id}/runs/",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token_for(user)}"},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        assert response.status == 202
        return json.loads(response.read())["id"]


def last_logged(campaign) -> int:
    return CampaignEvent.objects.filter(campaign=campaign).order_by("-sequence").values_list("sequence", flat=True)[0]


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT} s"
        time.sleep(0.05)  # polling interval


def sequences(events: list[dict[str, Any]]) -> list[int]:
    return [event["sequence"] for event in events]


def test_a_killed_web_process_clients_resume_on_another_with_exactly_what_they_missed(start_web, start_worker):
    started = time.monotonic()
    server_a, server_b = start_web(), start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="50")  # a run of a few seconds: the kill and the resumes land mid-run
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(owner=alice)

    native = NativeClient(server_a, alice)
    assert native.subscribe(campaign)["last_sequence"] == 0
    signalr = FailoverClient([server_a, server_b], alice, campaign)
    try:
        assert signalr.expect("subscribed", timeout=TIMEOUT)["server"] == server_a.url
        run_id = start_run(server_b, alice, campaign)  # any process serves the REST API

        # Both clients are receiving the run from server A...
        native.until("step.started")
        signalr.expect_event("step.started")
        server_a.kill()  # ...when it dies: kill -9 of daphne, no close handshake, no goodbye

        native.until_closed()
        disconnected = signalr.expect("disconnected", timeout=TIMEOUT)
        assert disconnected["server"] == server_a.url
        seen_native, seen_signalr = sequences(native.events), sequences(signalr.events())
        assert disconnected["lastSequence"] == seen_signalr[-1]
        # The run goes on without them: let both miss events before they come back.
        missed_from = max(seen_native[-1], seen_signalr[-1])
        wait_for(lambda: last_logged(campaign) > missed_from, "event stored after the kill")
        missed_by_signalr = last_logged(campaign)

        signalr.release()  # the SignalR client fails over by itself, to server B
        native.connect(server_b)  # the native client reconnects, to server B, and resumes
        answer = native.subscribe(campaign, last_sequence=seen_native[-1])
        assert answer["last_sequence"] > seen_native[-1]  # it did miss events
        resumed_native = native.until("campaign.completed")
        signalr.expect_event("campaign.completed")
        finished = signalr.finish(timeout=TIMEOUT)
    finally:
        native.close()
        signalr.kill()
    subscribed_b = [line for line in finished if line["event"] == "subscribed"][-1]
    assert subscribed_b == {"event": "subscribed", "server": server_b.url, "resumedFrom": seen_signalr[-1]}
    assert [line for line in finished if line["event"] == "failover_finished"][0]["connections"] == 2

    logged = list(CampaignEvent.objects.filter(campaign=campaign).order_by("sequence").values_list("event", "sequence"))
    n = logged[-1][1]
    assert [sequence for _, sequence in logged] == list(range(1, n + 1))
    assert logged[-1][0] == "campaign.completed" and resumed_native[-1]["data"] == {"run_id": run_id}

    # Native: exactly 1..N, nothing twice; what was missed came replayed from the log, then live.
    assert sequences(native.events) == list(range(1, n + 1))
    missed = [event for event in resumed_native if event["sequence"] <= answer["last_sequence"]]
    assert missed and sequences(missed) == list(range(seen_native[-1] + 1, answer["last_sequence"] + 1))
    assert all(event.get("replayed") is True for event in missed)
    assert answer["last_sequence"] < n, "resumed mid-run: the rest came live from server B"
    assert [event["event"] for event in native.events] == [event for event, _ in logged]

    # SignalR: exactly 1..N too; the resumed part starts with the replay of what it missed.
    events = signalr.events()
    assert sequences(events) == list(range(1, n + 1))
    assert [event["name"] for event in events] == [event for event, _ in logged]
    before, after = events[: len(seen_signalr)], events[len(seen_signalr) :]
    assert {event["server"] for event in before} == {server_a.url}
    assert {event["server"] for event in after} == {server_b.url}
    missed = [event for event in after if event["sequence"] <= missed_by_signalr]
    assert missed and all(event["replayed"] for event in missed), "what it missed came replayed from the log"
    assert not all(event["replayed"] for event in after), "resumed mid-run: the rest came live from server B"

    assert "Traceback" not in server_b.log(), server_b.log()[-3000:]
    assert time.monotonic() - started < 90
