"""The real npm client, ``@microsoft/signalr``, run by Node.js against the real stack: daphne
(marketing_agents.serve), a Celery worker, Redis and PostgreSQL. The Node side is
realtime/tests/js_signalr/hub_client.mjs; it prints one JSON line per thing it saw.

`make test` installs the pinned client (``npm ci`` in js_signalr/) before pytest runs.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from campaigns.tests.factories import PASSWORD, CampaignFactory, UserFactory
from eventlog.models import CampaignEvent
from eventlog.publisher import publish

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

JS_DIR = Path(__file__).parent / "js_signalr"
SCRIPT = JS_DIR / "hub_client.mjs"
ARTIFACT_TYPES = {"Copy", "ShortCopy", "Visual"}


@pytest.fixture(autouse=True)
def _node_and_the_signalr_client():
    """A missing client fails these tests (it is never a silent skip); make test installs both."""
    if not shutil.which("node") or not (JS_DIR / "node_modules" / "@microsoft" / "signalr").is_dir():
        pytest.fail("needs Node.js and `npm ci` in realtime/tests/js_signalr (make test does both)")


class NodeClient:
    """hub_client.mjs in a subprocess; its JSON lines are read as they come."""

    def __init__(
        self, scenario: str, server, user, campaign, other_campaign=None, *, script: Path = SCRIPT, **extra_env: str
    ) -> None:
        env = {
            **os.environ,
            "BASE_URL": server.url,
            "HUB_USERNAME": user.username,
            "HUB_PASSWORD": PASSWORD,
            "CAMPAIGN_ID": campaign.public_id,
            "OTHER_CAMPAIGN_ID": other_campaign.public_id if other_campaign else "",
            **extra_env,
        }
        self.process = subprocess.Popen(
            ["node", str(script), scenario],
            cwd=JS_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if line:
                try:
                    self.lines.put(json.loads(line))
                except ValueError:
                    self.lines.put({"event": "garbage", "line": line})
        self.lines.put(None)

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line.rstrip())

    def expect(self, event: str, timeout: float = 60, *, required: bool = True) -> dict[str, Any] | None:
        """Lines until one with ``event``; fails on the script's error or exit (and on a timeout if required)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.01, remaining))
            except queue.Empty:
                line = {"event": "timeout"}
            if line is None:
                line = {"event": "exited", "code": self.process.poll()}
            self.seen.append(line)
            if line["event"] == event:
                return line
            if line["event"] == "timeout" and not required:
                self.seen.pop()
                return None
            if line["event"] in ("error", "exited", "timeout"):
                raise AssertionError(f"waiting for {event}: {line}\nseen: {self.seen[-20:]}\n" + self.log())
            if remaining <= 0:
                raise AssertionError(f"no {event} within {timeout} s\n{self.log()}")

    def finish(self, timeout: float = 60) -> list[dict[str, Any]]:
        self.expect("done", timeout)
        self.process.wait(10)
        assert self.process.returncode == 0, self.log()
        return self.seen

    def log(self) -> str:
        return "node stderr:\n" + "\n".join(self.stderr[-40:])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def node_clients():
    clients: list[NodeClient] = []

    def start(*args, **kwargs) -> NodeClient:
        client = NodeClient(*args, **kwargs)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.kill()


def make_users_and_campaigns():
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    return alice, CampaignFactory(owner=alice), CampaignFactory(owner=bob)


def events_in(seen: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in seen if line["event"] == name]


def log_sequences(campaign) -> list[int]:
    return list(CampaignEvent.objects.filter(campaign=campaign).order_by("sequence").values_list("sequence", flat=True))


def test_realtime_api_family_receives_a_whole_run_in_order(start_web, start_worker, node_clients):
    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="2")
    alice, campaign, _ = make_users_and_campaigns()
    client = node_clients("realtime-api", server, alice, campaign)
    seen = client.finish(timeout=120)

    assert seen[0]["event"] == "connected" and seen[0]["state"] == "Connected"
    assert seen[1] == {"event": "joined", "result": None}
    hub_events = [line for line in seen if line["event"].startswith("On")]
    names = [line["event"] for line in hub_events]
    assert names[0] == "OnCampaignStarted" and hub_events[0]["campaignId"] == campaign.public_id
    assert names[-1] == "OnCampaignCompleted" and hub_events[-1]["campaignId"] == campaign.public_id
    assert "OnGenerationFailed" not in names

    artifacts = [line["artifact"] for line in events_in(seen, "OnArtifactGenerated")]
    assert {a["type"] for a in artifacts} == ARTIFACT_TYPES
    assert artifacts[0]["type"] == "Copy"  # the others are derived from the copy
    for artifact in artifacts:
        assert {"id", "campaignId", "type", "content", "metadata", "createdAt", "agentName"} <= set(artifact)
        assert artifact["campaignId"] == campaign.public_id and artifact["content"]

    chunks = [line["chunk"] for line in events_in(seen, "OnChunkReceived")]
    assert chunks, "chunks were streamed"
    assert names.index("OnChunkReceived") < names.index("OnArtifactGenerated")
    assert {c["artifactType"] for c in chunks} == ARTIFACT_TYPES
    assert all(c["campaignId"] == campaign.public_id and isinstance(c["isComplete"], bool) for c in chunks)
    copy_text = "".join(c["chunk"] for c in chunks if c["artifactType"] == "Copy")
    assert copy_text == next(a["content"] for a in artifacts if a["type"] == "Copy")

    compliance = events_in(seen, "OnComplianceCheckCompleted")
    assert len(compliance) == 1
    result = compliance[0]["result"]
    assert result["campaignId"] == campaign.public_id
    assert isinstance(result["isCompliant"], bool) and 0 <= result["complianceScore"] <= 100
    assert {"issues", "feedback", "auditedAt"} <= set(result)
    last_artifact = max(i for i, name in enumerate(names) if name == "OnArtifactGenerated")
    assert last_artifact < names.index("OnComplianceCheckCompleted") < names.index("OnCampaignCompleted")
    assert events_in(seen, "stopped")[0]["state"] == "Disconnected"


def test_task012_family_subscribe_snapshot_sequences_and_cancel(start_web, start_worker, node_clients):
    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="40")  # slow enough to cancel mid-run
    alice, campaign, _ = make_users_and_campaigns()
    client = node_clients("task012", server, alice, campaign)
    seen = client.finish(timeout=120)

    snapshot = events_in(seen, "snapshot_result")[0]["snapshot"]
    assert snapshot["campaignId"] == campaign.public_id and snapshot["currentState"] == "idle"
    assert snapshot["lastEventSequence"] == 0
    pushed = events_in(seen, "ReceiveCampaignSnapshot")
    assert pushed[0]["snapshot"] == snapshot  # sent as the client method too

    run_id = events_in(seen, "run_started")[0]["runId"]
    events = [line["evt"] for line in events_in(seen, "ReceiveOrchestrationEvent")]
    durable = [e for e in events if "sequence" in e]
    assert [e["sequence"] for e in durable] == list(range(1, len(durable) + 1)), "contiguous sequences"
    assert "campaign.started" in [e["event"] for e in durable]
    assert all(e["campaignId"] == campaign.public_id for e in events)
    assert all(e["runId"] == run_id and "emittedAt" in e for e in durable)
    assert "run.cancelled" in [e["event"] for e in durable]
    assert any(e["event"] == "artifact.chunk" and "afterSequence" in e for e in events)
    updates = events_in(seen, "ReceiveArtifactUpdate")
    assert updates and updates[0]["update"]["artifact"]["type"] == "Copy"

    acks = events_in(seen, "ReceiveCancellationAcknowledgement")
    assert [a["runId"] for a in acks] == [run_id]
    assert events_in(seen, "cancel_completed")
    after = events_in(seen, "snapshot_after")[0]["snapshot"]
    assert after["currentState"] == "cancelled" and after["runId"] == run_id
    # Everything up to the cancellation reached the client exactly as it is in the log.
    logged = log_sequences(campaign)
    assert [e["sequence"] for e in durable] == logged[: len(durable)]


def test_automatic_reconnect_after_a_server_restart_then_rejoin(start_web, node_clients):
    from marketing_agents.tests.processes import WebServer

    server = start_web()
    alice, campaign, _ = make_users_and_campaigns()
    client = node_clients("reconnect", server, alice, campaign)
    client.expect("joined", timeout=30)

    server.stop()  # daphne shuts down: the hub tells its clients to reconnect
    reconnecting = client.expect("reconnecting", timeout=30)
    replacement = WebServer(server.log_path.parent, port=server.port).start()
    try:
        client.expect("reconnected", timeout=60)
        client.expect("rejoined", timeout=30)
        completed = None
        deadline = time.monotonic() + 60
        while completed is None and time.monotonic() < deadline:
            # Published again until it arrives: a rejoin may still be on its way to the new server.
            publish(campaign, "campaign.completed", {"run_id": None})
            completed = client.expect("OnCampaignCompleted", timeout=3, required=False)
        assert completed is not None and completed["campaignId"] == campaign.public_id, client.seen
        client.finish(timeout=30)
    finally:
        replacement.stop()
    # The hub's Close message (allowReconnect) arrived before the socket closed.
    error = reconnecting["error"] or ""
    assert "Server returned an error on close: The server is shutting down." in error, error
    events = [line["event"] for line in client.seen]
    assert events.index("OnCampaignCompleted") < events.index("closed"), "closed only by the final stop()"


def test_refusals_are_readable_and_a_malformed_record_closes_only_its_connection(start_web, node_clients):
    server = start_web()
    alice, campaign, bobs_campaign = make_users_and_campaigns()
    client = node_clients("refusals", server, alice, campaign, other_campaign=bobs_campaign)
    seen = client.finish(timeout=60)

    bad = events_in(seen, "bad_token")[0]
    assert bad["ok"] is False and "401" in bad["error"] and "Authentication required" in bad["error"]
    bad_skip = events_in(seen, "bad_token_skip_negotiation")[0]
    assert bad_skip["ok"] is False and "Authentication required" in bad_skip["error"]
    foreign = events_in(seen, "foreign_campaign")[0]
    assert foreign["ok"] is False and "Campaign not found." in foreign["error"]
    unknown = events_in(seen, "unknown_method")[0]
    assert unknown["ok"] is False and "NoSuchMethod" in unknown["error"]
    for error in (bad["error"], bad_skip["error"], foreign["error"], unknown["error"]):
        assert "Traceback" not in error
    assert events_in(seen, "skip_negotiation")[0]["state"] == "Connected"

    malformed = events_in(seen, "malformed")[0]
    assert malformed["received"][0] == "{}\x1e"
    close = json.loads(malformed["received"][-1].rstrip("\x1e"))
    assert close["type"] == 7 and "Invalid record" in close["error"]
    assert events_in(seen, "other_connection_still_works")[0]["state"] == "Connected"


def test_the_account_stream_delivers_spend_update_and_budget_alert(start_web, start_worker, node_clients):
    """SubscribeToAccount with the official client: a run's TaskStarted, SpendUpdate, BudgetAlert (the
    run pushes spend past half the budget) and TaskCompleted, in the account log's order."""
    from decimal import Decimal

    from accounts.services import account_update, spend_record
    from eventlog.models import StreamEvent

    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="2")
    alice, campaign, _ = make_users_and_campaigns()
    account_update(user_id=alice.pk, monthly_budget=Decimal("1"))
    spend_record(user_id=alice.pk, cost=Decimal("0.4999"))  # before the client subscribes: not sent to it
    client = node_clients("account", server, alice, campaign)
    seen = client.finish(timeout=120)

    run_id = events_in(seen, "run_started")[0]["runId"]
    [started] = events_in(seen, "TaskStarted")
    assert started["payload"]["runId"] == run_id and started["payload"]["campaignId"] == campaign.public_id
    [completed] = events_in(seen, "TaskCompleted")
    assert completed["payload"] == {**completed["payload"], "runId": run_id, "state": "completed", "stream": "account"}
    [alert] = events_in(seen, "BudgetAlert")
    assert alert["payload"]["threshold"] == 50 and alert["payload"]["budget"] == "1.000000"
    updates = [line["payload"] for line in events_in(seen, "SpendUpdate")]
    assert updates and Decimal(updates[-1]["spend"]) > Decimal("0.5")
    assert {"period", "spend", "previousSpend", "delta", "budget", "sequence", "emittedAt"} <= set(updates[0])
    received = [line["payload"]["sequence"] for line in seen if "payload" in line]
    stored = list(
        StreamEvent.objects.filter(stream__user=alice, sequence__gt=received[0] - 1)
        .order_by("sequence")
        .values_list("sequence", flat=True)
    )
    assert received == stored, "every account event after subscribing, once, in order"
    snapshot = events_in(seen, "snapshot")[0]["snapshot"]
    assert snapshot["lastEventSequence"] in stored and snapshot["activeRuns"] == []
    assert snapshot["spend"] == updates[-1]["spend"], "the last SpendUpdate carries the month's exact spend"


def test_messagepack_through_a_whole_run_with_both_method_families(start_web, start_worker, node_clients):
    """@microsoft/signalr-protocol-msgpack: binary frames, the same methods and payloads as JSON."""
    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="2")
    alice, campaign, _ = make_users_and_campaigns()
    seen = node_clients("msgpack", server, alice, campaign).finish(timeout=120)

    assert events_in(seen, "protocols")[0] == {"event": "protocols", "seed": "messagepack", "family": "messagepack"}
    assert events_in(seen, "snapshot_result")[0]["snapshot"]["campaignId"] == campaign.public_id
    assert "Campaign not found." in events_in(seen, "refused")[0]["error"]
    evts = [line["evt"] for line in events_in(seen, "ReceiveOrchestrationEvent")]
    sequences = [e["sequence"] for e in evts if e.get("sequence") is not None]
    assert sequences == log_sequences(campaign), "every durable event once, in order, over MessagePack"
    assert evts[-1]["event"] == "campaign.completed"
    assert {u["update"]["artifact"]["type"] for u in events_in(seen, "ReceiveArtifactUpdate")} == ARTIFACT_TYPES
    artifacts = [line["artifact"] for line in events_in(seen, "OnArtifactGenerated")]
    assert {a["type"] for a in artifacts} == ARTIFACT_TYPES and all(a["content"] for a in artifacts)
    chunks = [line["chunk"] for line in events_in(seen, "OnChunkReceived")]
    copy_text = "".join(c["chunk"] for c in chunks if c["artifactType"] == "Copy")
    assert copy_text == next(a["content"] for a in artifacts if a["type"] == "Copy")
    assert len(events_in(seen, "OnComplianceCheckCompleted")) == 1
    assert events_in(seen, "OnCampaignCompleted")[0]["campaignId"] == campaign.public_id


def drop_sockets(server) -> None:
    """The server's side of every connection to it destroyed by the kernel (``ss -K``): the client
    sees its WebSocket reset mid-stream, as when a proxy or the network cuts it; the server, a
    connection lost."""
    result = subprocess.run(
        ["ss", "-K", "-t", "state", "established", "sport", "=", f":{server.port}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    assert f":{server.port} " in result.stdout, f"no connection was cut: {result.stdout!r} {result.stderr!r}"


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
def test_stateful_reconnect_carries_on_after_the_socket_is_cut_without_onreconnected(
    start_web, start_worker, node_clients, protocol
):
    """withStatefulReconnect(): the socket is cut mid-run; the client opens a new one with the same
    connection token by itself and the server resumes it (no handshake, no re-subscribe): no
    onreconnecting or onreconnected, the same connection id, and every durable event exactly once."""
    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="15")
    alice, campaign, _ = make_users_and_campaigns()
    client = node_clients("stateful", server, alice, campaign, HUB_PROTOCOL=protocol, START_RUN="1")
    assert client.expect("connected")["protocol"] == protocol
    while (client.expect("ReceiveOrchestrationEvent")["sequence"] or 0) < 4:
        pass
    cut_mid_run_then_finished(client, server, campaign)
    assert "resumed session" in server.log_path.read_text()


def cut_mid_run_then_finished(client: NodeClient, server, campaign) -> None:
    """Cut the ``stateful`` scenario's socket while the run goes on; it must carry on statefully."""
    drop_sockets(server)
    logged_at_cut = len(log_sequences(campaign))
    client.expect("stateful_finished", 120)
    seen = client.finish()
    log = log_sequences(campaign)
    assert logged_at_cut < len(log), "the socket was cut while the run was still going"
    assert_resumed_statefully(seen, log, sockets=2)


def assert_resumed_statefully(seen: list[dict[str, Any]], log: list[int], *, sockets: int) -> None:
    """What the ``stateful`` scenario saw: every durable event once, in order, on one connection
    (the same id) over ``sockets`` sockets, and never a reconnect of the HubConnection itself."""
    connected, finished = events_in(seen, "connected")[0], events_in(seen, "stateful_finished")[0]
    durable = [line["sequence"] for line in events_in(seen, "ReceiveOrchestrationEvent") if line["sequence"]]
    assert durable == log, "every durable event once, in order"
    assert finished["sockets"] == sockets == len(events_in(seen, "socket_opened")), "new sockets, one connection"
    assert finished["connectionId"] == connected["connectionId"] and finished["state"] == "completed"
    before_stop = seen[: seen.index(finished)]
    assert not [line for line in before_stop if line["event"] in ("reconnecting", "reconnected", "closed")]
