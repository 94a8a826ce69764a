"""The track-4 hubs, /hubs/orchestrator and /hubs/agent, through the real ``@microsoft/signalr``
client (realtime/tests/js_signalr/track4.mjs) against daphne, a Celery worker, Redis and the
database: sessions, plans of both strategies, conversations with every agent, tools behind an
approval decided from another connection, and the refusals."""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from campaigns.models import Campaign
from campaigns.tests.factories import PASSWORD, UserFactory
from orchestration.models import Approval, ApprovalState, Artifact, OrchestrationPlan, RunKind, RunState, RunStep
from realtime.tests.test_signalr_client import (  # noqa: F401 (an autouse fixture)
    JS_DIR,
    NodeClient,
    _node_and_the_signalr_client,
    drop_sockets,
    events_in,
    make_users_and_campaigns,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCRIPT = JS_DIR / "track4.mjs"
AGENTS = ["copywriter", "short_copywriter", "visual_designer", "compliance_auditor"]


def lines(seen: list[dict[str, Any]], client: str, event: str) -> list[Any]:
    return [line["payload"] for line in seen if line.get("client") == client and line["event"] == event]


def results(seen: list[dict[str, Any]], client: str, method: str) -> list[dict[str, Any]]:
    return [
        line
        for line in seen
        if line.get("client") == client and line["event"] in ("result", "refused") and line["method"] == method
    ]


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
def test_a_whole_track4_flow_with_the_official_client(start_web, start_worker, protocol):
    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="2")
    alice, _, bobs = make_users_and_campaigns()
    client = NodeClient("flow", server, alice, bobs, bobs, script=SCRIPT, HUB_PROTOCOL=protocol)
    try:
        seen = client.finish(timeout=300)
    finally:
        client.kill()

    # CreateSession: the answer, the caller joined, SessionCreated; the session is a campaign.
    created = results(seen, "orch1", "CreateSession")[0]["result"]
    assert created["success"] is True and created["errorMessage"] is None
    session_id = created["sessionId"]
    assert created["session"]["id"] == session_id and created["session"]["agentIds"] == AGENTS
    campaign = Campaign.objects.get(public_id=session_id)
    assert campaign.owner == alice and campaign.name == "Spring launch"
    assert lines(seen, "orch1", "SessionCreated") == [created["session"]]

    # Plans: stored with their runs; each strategy's dependencies; the steps ran as the plan says.
    plans = [line["result"] for line in results(seen, "orch1", "CreateOrchestrationPlan")[:2]]
    sequential, parallel = plans
    assert [p["strategy"] for p in plans] == ["sequential", "parallel"]
    steps = ["Copy", "ShortCopy", "Visual", "audit"]
    assert [s["id"] for s in sequential["steps"]] == steps
    assert [s["dependsOn"] for s in sequential["steps"]] == [[], ["Copy"], ["ShortCopy"], ["Visual"]]
    assert [s["dependsOn"] for s in parallel["steps"]] == [[], ["Copy"], ["Copy"], ["Copy", "ShortCopy", "Visual"]]
    assert [s["agentId"] for s in parallel["steps"]] == AGENTS
    assert all(p["sessionId"] == session_id and p["goal"].startswith("Launch the spring range") for p in plans)
    for plan in plans:
        stored = OrchestrationPlan.objects.get(public_id=plan["id"])
        assert stored.run is not None and stored.run.state == RunState.COMPLETED
        assert stored.run.settings["strategy"] == plan["strategy"]
    run_steps = list(RunStep.objects.filter(run__orchestration_plan__public_id=sequential["id"]).order_by("position"))
    for earlier, later in zip(run_steps, run_steps[1:], strict=False):
        assert earlier.finished_at <= later.started_at, "a sequential plan runs one step at a time"

    # Both orchestrator clients saw each plan made, its progress (monotonic) and its completion.
    for plan in plans:
        for name in ("orch1", "orch2"):
            assert [p["id"] for p in lines(seen, name, "OrchestrationPlanCreated")].count(plan["id"]) == 1
            progress = [p for p in lines(seen, name, "OrchestrationProgress") if p["planId"] == plan["id"]]
            percentages = [p["percentage"] for p in progress]
            assert percentages == sorted(set(percentages)) and percentages[-1] == 100, percentages
            assert all(p["sessionId"] == session_id for p in progress)
            assert {p["currentStep"] for p in progress} >= {"Copy", "ShortCopy", "Visual"}
            completed = [p for p in lines(seen, name, "OrchestrationCompleted") if p["planId"] == plan["id"]]
            assert len(completed) == 1 and completed[0]["success"] is True and completed[0]["error"] is None
            assert {a["type"] for a in completed[0]["artifacts"]} == {"Copy", "ShortCopy", "Visual"}
        assert [p for p in lines(seen, "orch1", "OrchestrationProgress") if p["planId"] == plan["id"]] == [
            p for p in lines(seen, "orch2", "OrchestrationProgress") if p["planId"] == plan["id"]
        ]

    # Conversations: the message, its answer streamed to both agent clients, then the whole answer.
    for name in ("agent1", "agent2"):
        messages = [m for m in lines(seen, name, "ReceiveAgentMessage") if m["content"].startswith("Make it punchier")]
        assert [m["agentId"] for m in messages] == AGENTS
        assert all(m["sentBy"] == "alice" and m["sessionId"] == session_id for m in messages)
        for agent in AGENTS[:3]:
            answer = next(r for r in lines(seen, name, "ReceiveAgentResponse") if r["agentId"] == agent)
            streamed = [u for u in lines(seen, name, "ReceiveStreamingUpdate") if u["agentId"] == agent]
            assert streamed and all(u["response"]["isComplete"] is False for u in streamed)
            mine = [u for u in streamed if u["runId"] == answer["runId"]]
            if agent != "visual_designer":  # the visual streams its description, then is drawn as SVG
                assert "".join(u["response"]["content"] for u in mine) == answer["response"]["content"]
            assert answer["response"]["isComplete"] is True and answer["response"]["artifactId"]
    assert lines(seen, "agent1", "ReceiveAgentResponse") == lines(seen, "agent2", "ReceiveAgentResponse")
    audits = [r for r in lines(seen, "agent1", "ReceiveAgentResponse") if r["agentId"] == "compliance_auditor"]
    assert audits and all(r["response"]["content"].startswith("Score ") for r in audits)

    # The new versions over REST: the two plans wrote v1 and v2, each message v3.
    artifacts = next(line for line in seen if line["event"] == "artifacts")["artifacts"]["results"]
    versions = Counter(a["type"] for a in artifacts)
    assert versions["Copy"] >= 3 and versions["ShortCopy"] >= 3 and versions["Visual"] >= 3, versions
    asked = {m["runId"] for m in lines(seen, "agent1", "ReceiveAgentMessage") if m["content"].startswith("Make it")}
    responses = lines(seen, "agent1", "ReceiveAgentResponse")
    answered = {r["response"]["artifactId"] for r in responses if r["runId"] in asked} - {None}
    assert len(answered) == 3 and answered <= {a["id"] for a in artifacts}

    # Refusals, readable.
    errors = lines(seen, "agent1", "ReceiveError")
    codes = [e["code"] for e in errors]
    assert codes[:3] == ["AGENT_NOT_FOUND", "SESSION_NOT_FOUND", "BUSY"], errors
    assert "nobody" in errors[0]["message"] and "copywriter" in errors[0]["message"]
    assert errors[1]["message"] == "Session not found."
    assert "busy" in errors[2]["message"] and errors[2]["agentId"] == "visual_designer"
    for name, method in (("agent1", "JoinSession"), ("orch1", "JoinSession"), ("orch1", "CreateOrchestrationPlan")):
        refused = results(seen, name, method)[-1]
        assert refused["event"] == "refused" and "Session not found." in refused["error"], refused
    assert not OrchestrationPlan.objects.filter(campaign=bobs).exists() and not bobs.runs.exists()

    # Tools behind an approval, decided from the other connection: approved, then rejected.
    started = lines(seen, "agent1", "ToolExecutionStarted")
    assert [s["status"] for s in started] == ["AwaitingApproval", "AwaitingApproval"]
    assert all(s["toolName"] == "generate_short_copy" and s["agentId"] == "short_copywriter" for s in started)
    required = lines(seen, "agent2", "ToolApprovalRequired")
    assert len(required) == 2 and lines(seen, "agent1", "ToolApprovalRequired") == required
    assert required[0]["parameters"] == {"instructions": "Three posts (approve)"}
    assert required[0]["toolName"] == "generate_short_copy" and required[0]["agentId"] == "short_copywriter"
    again = results(seen, "agent2", "ApproveTool")
    assert [line["event"] for line in again] == ["result", "refused", "refused"]
    assert "already been decided" in again[1]["error"]
    done = lines(seen, "agent1", "ToolExecutionCompleted")
    assert done == lines(seen, "agent2", "ToolExecutionCompleted")
    assert done[0]["success"] is True and done[0]["output"] and done[0]["artifactId"]
    assert isinstance(done[0]["executionTime"], int)
    assert done[1]["success"] is False and done[1]["output"] == "Rejected by alice: Not this week"
    approvals = list(Approval.objects.filter(run__campaign=campaign, run__kind=RunKind.TOOL).order_by("created_at"))
    assert [a.state for a in approvals] == [ApprovalState.APPROVED, ApprovalState.REJECTED]
    assert [a.run.state for a in approvals] == [RunState.COMPLETED, RunState.CANCELLED]


def readme_snippet() -> str:
    """The README's track-4 TypeScript block (plain JavaScript, so Node runs it as it is)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return text.split("<!-- track-4 snippet -->", 1)[1].split("```typescript\n", 1)[1].split("```", 1)[0]


def test_the_readmes_track4_snippet_runs(start_web, start_worker):
    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="2")
    alice = UserFactory(username="alice")
    script = JS_DIR / f"readme-track4-{os.getpid()}.mjs"  # beside node_modules, so the import resolves
    script.write_text(readme_snippet())
    env = {**os.environ, "BASE_URL": server.url, "HUB_USERNAME": alice.username, "HUB_PASSWORD": PASSWORD}
    try:
        ran = subprocess.run(["node", str(script)], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=180)
    finally:
        script.unlink()

    assert ran.returncode == 0, ran.stderr
    assert "100% Campaign ready" in ran.stdout
    assert "plan completed: true Copy v1, ShortCopy v1, Visual v1" in ran.stdout, ran.stdout
    answered = re.search(r"copywriter answered with v2 \((art_[\w-]+)\)", ran.stdout)
    assert answered, ran.stdout
    artifact = Artifact.objects.get(public_id=answered.group(1))
    assert artifact.version == 2 and artifact.type == "Copy" and artifact.content in ran.stdout


def test_stateful_reconnect_on_the_agent_hub_keeps_the_conversation_whole(start_web, start_worker):
    """The socket is cut while the answer streams; the client carries on over a new socket with the
    same connection (no onreconnecting): the message and the answer arrive once each, and the chunks
    it got are never repeated."""
    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="20")
    alice, campaign, _ = make_users_and_campaigns()
    client = NodeClient("stateful", server, alice, campaign, script=SCRIPT)
    try:
        connected = client.expect("connected")
        client.expect("ReceiveStreamingUpdate", 60)
        drop_sockets(server)
        finished = client.expect("stateful_finished", 120)
        seen = client.finish()
    finally:
        client.kill()

    assert finished["connectionId"] == connected["connectionId"] and finished["sockets"] == 2
    assert not events_in(seen, "reconnecting") and not events_in(seen, "reconnected")
    assert len(events_in(seen, "ReceiveAgentMessage")) == 1
    answers = [line["payload"] for line in events_in(seen, "ReceiveAgentResponse")]
    assert [a["agentId"] for a in answers] == ["copywriter", "compliance_auditor"]
    artifact = Artifact.objects.get(public_id=answers[0]["response"]["artifactId"])
    assert answers[0]["response"]["content"] == artifact.content
    indexes = [line["payload"]["response"]["chunkIndex"] for line in events_in(seen, "ReceiveStreamingUpdate")]
    assert indexes == sorted(set(indexes)), "no chunk twice, none out of order"
