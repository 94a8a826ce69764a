"""The track-4 domain through the REST API: plans made from a goal and a strategy and executed once,
messages to an agent, tools behind an approval decided on the runs' approval endpoint; what is
refused, and that a refusal changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from campaigns.tests.factories import ArtifactFactory, RunFactory
from orchestration.models import Approval, OrchestrationPlan, OrchestrationRun, RunState
from orchestration.tests.api import assert_json_error, database, events, get_run, post

pytestmark = pytest.mark.django_db


def plans_url(campaign) -> str:
    return f"/api/campaigns/{campaign.public_id}/plans/"


def make_plan(client, campaign, **body: Any) -> dict[str, Any]:
    response = post(client, plans_url(campaign), {"goal": "Launch the spring range", **body})
    assert response.status_code == 201, response.content
    return response.json()


# --- plans -----------------------------------------------------------------------------------------


def test_a_parallel_plan_waits_only_for_what_each_step_is_written_from(alice_api, campaign):
    plan = make_plan(alice_api, campaign)

    assert plan["id"].startswith("plan_") and plan["session_id"] == campaign.public_id
    assert plan["strategy"] == "parallel" and plan["run_id"] is None
    assert [(s["id"], s["agent_id"], s["depends_on"]) for s in plan["steps"]] == [
        ("Copy", "copywriter", []),
        ("ShortCopy", "short_copywriter", ["Copy"]),
        ("Visual", "visual_designer", ["Copy"]),
        ("audit", "compliance_auditor", ["Copy", "ShortCopy", "Visual"]),
    ]
    assert "Launch the spring range" in plan["steps"][0]["task"]
    last = events(alice_api, campaign)[-1]
    assert last["event"] == "plan.created" and last["data"] == {"plan": plan}
    assert alice_api.get(f"/api/plans/{plan['id']}/").json() == plan
    assert alice_api.get(plans_url(campaign)).json()["results"] == [plan]


def test_a_sequential_plan_of_some_agents_chains_them_in_the_runs_order(alice_api, campaign):
    plan = make_plan(alice_api, campaign, strategy="sequential", agents=["visual_designer", "copywriter"])

    assert [(s["id"], s["depends_on"]) for s in plan["steps"]] == [("Copy", []), ("Visual", ["Copy"])]


def test_executing_a_plan_starts_its_run_once(alice_api, campaign):
    plan = make_plan(alice_api, campaign, strategy="sequential", agents=["copywriter", "compliance_auditor"])

    response = post(alice_api, f"/api/plans/{plan['id']}/execute/")

    assert response.status_code == 202, response.content
    run = response.json()
    assert run["plan"] == ["Copy", "audit"] and run["kind"] == "generation"
    assert run["settings"]["strategy"] == "sequential"
    stored = OrchestrationRun.objects.get(public_id=run["id"])
    assert stored.steps.get(name="Copy").instructions == "Launch the spring range"
    assert alice_api.get(f"/api/plans/{plan['id']}/").json()["run_id"] == run["id"]
    before = database()
    again = assert_json_error(post(alice_api, f"/api/plans/{plan['id']}/execute/"), 409)
    assert run["id"] in again["detail"] and "executed already" in again["detail"]
    assert database() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"goal": "   "}, "goal"),
        ({"goal": "x" * 5001}, "goal"),
        ({}, "goal"),
        ({"goal": "ok", "strategy": "random"}, "strategy"),
        ({"goal": "ok", "agents": ["nobody"]}, "agents"),
        ({"goal": "ok", "agents": []}, "agents"),
        ({"goal": "ok", "agents": "copywriter"}, "agents"),
        ({"goal": ["ok"]}, "goal"),
    ],
)
def test_a_bad_plan_is_400_naming_the_field_and_stores_nothing(alice_api, campaign, body, field):
    before = database()
    error = assert_json_error(post(alice_api, plans_url(campaign), body), 400)
    assert field in error, error
    assert database() == before and not OrchestrationPlan.objects.exists()


def test_a_plan_of_the_auditor_alone_audits_the_current_set(alice_api, campaign):
    plan = make_plan(alice_api, campaign, agents=["compliance_auditor"])
    assert [(s["id"], s["depends_on"]) for s in plan["steps"]] == [("audit", [])]


def test_another_users_plans_are_404(alice_api, bob_api, campaign):
    plan = make_plan(alice_api, campaign)
    before = database()
    assert_json_error(bob_api.get(f"/api/plans/{plan['id']}/"), 404)
    assert_json_error(post(bob_api, f"/api/plans/{plan['id']}/execute/"), 404)
    assert_json_error(post(bob_api, plans_url(campaign), {"goal": "mine now"}), 404)
    assert_json_error(bob_api.get("/api/plans/plan_nope/"), 404)
    assert database() == before and OrchestrationPlan.objects.count() == 1


# --- messages to an agent --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "plan"),
    [
        ("copywriter", ["Copy", "audit"]),
        ("visual_designer", ["Visual", "audit"]),
        ("compliance_auditor", ["audit"]),
    ],
)
def test_a_message_starts_the_agents_next_version_and_the_audit(alice_api, campaign, agent, plan):
    response = post(
        alice_api, f"/api/campaigns/{campaign.public_id}/messages/", {"agent": agent, "content": " Bolder "}
    )

    assert response.status_code == 202, response.content
    run = response.json()
    assert run["kind"] == "revision" and run["plan"] == plan
    last = events(alice_api, campaign)[-1]
    assert last["event"] == "agent.message"
    assert last["data"] == {"agent": agent, "content": "Bolder", "sent_by": "alice", "run_id": run["id"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent": "nobody", "content": "hi"}, "agent"),
        ({"agent": "copywriter", "content": ""}, "content"),
        ({"agent": "copywriter"}, "content"),
        ({"agent": "copywriter", "content": "x" * 5001}, "content"),
        ({"content": "hi"}, "agent"),
    ],
)
def test_a_bad_message_is_400_and_starts_nothing(alice_api, campaign, body, field):
    before = database()
    error = assert_json_error(post(alice_api, f"/api/campaigns/{campaign.public_id}/messages/", body), 400)
    assert field in error, error
    assert database() == before


def test_a_message_while_the_agents_are_busy_is_409(alice_api, campaign):
    RunFactory(campaign=campaign, state=RunState.GENERATING)
    before = database()
    body = {"agent": "copywriter", "content": "Bolder"}
    error = assert_json_error(post(alice_api, f"/api/campaigns/{campaign.public_id}/messages/", body), 409)
    assert "active run" in error["detail"]
    assert database() == before


# --- tools -----------------------------------------------------------------------------------------


def tools_url(campaign) -> str:
    return f"/api/campaigns/{campaign.public_id}/tools/"


def test_a_tool_without_approval_runs_that_step_alone(alice_api, campaign):
    body = {"tool_name": "generate_copy", "parameters": {"instructions": "Shorter"}}
    response = post(alice_api, tools_url(campaign), body)

    assert response.status_code == 202, response.content
    run = response.json()
    assert run["kind"] == "tool" and run["plan"] == ["Copy"] and run["state"] == "pending" and run["approvals"] == []
    assert OrchestrationRun.objects.get(public_id=run["id"]).steps.get().instructions == "Shorter"


def test_a_tool_behind_an_approval_waits_then_an_approval_starts_it(alice_api, campaign):
    body = {"tool_name": "generate_visual", "require_approval": True}
    run = post(alice_api, tools_url(campaign), body).json()

    assert run["state"] == "awaiting_approval"
    approval = run["approvals"][0]
    assert approval["state"] == "pending" and approval["step"] == "Visual"
    assert approval["tool"] == {"tool_name": "generate_visual", "agent": "visual_designer", "parameters": {}}
    required = events(alice_api, campaign)[-1]
    assert required["event"] == "approval.required" and required["data"]["tool"] == approval["tool"]

    response = post(alice_api, f"/api/runs/{run['id']}/approvals/{approval['id']}/", {"decision": "approve"})

    assert response.status_code == 200, response.content
    assert response.json()["state"] == "approved"
    assert get_run(alice_api, run["id"])["state"] == "pending"  # queued for a worker to begin
    assert [e["event"] for e in events(alice_api, campaign)[-2:]] == [
        "approval.resolved",
        "orchestration.state_changed",
    ]


def test_a_rejected_tool_is_cancelled_with_its_reason_and_reported(alice_api, campaign):
    body = {"tool_name": "check_compliance", "require_approval": True}
    run = post(alice_api, tools_url(campaign), body).json()
    approval_id = run["approvals"][0]["id"]

    response = post(alice_api, f"/api/runs/{run['id']}/approvals/{approval_id}/", {"decision": "reject"})

    assert response.status_code == 200, response.content
    after = get_run(alice_api, run["id"])
    assert after["state"] == "cancelled" and after["error"] == "Rejected by alice."
    completed = events(alice_api, campaign)[-1]
    assert completed["event"] == "tool.completed"
    assert completed["data"] == {
        "run_id": run["id"],
        "tool_name": "check_compliance",
        "agent": "compliance_auditor",
        "success": False,
        "output": "Rejected by alice.",
        "artifact_id": None,
        "execution_time_ms": None,
    }
    assert Approval.objects.get(public_id=approval_id).state == "rejected"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tool_name": "rm_rf"}, "tool_name"),
        ({}, "tool_name"),
        ({"tool_name": "generate_copy", "parameters": {"shell": "ls"}}, "detail"),
        ({"tool_name": "generate_copy", "parameters": {"instructions": 3}}, "detail"),
        ({"tool_name": "generate_copy", "parameters": []}, "parameters"),
        ({"tool_name": "generate_copy", "require_approval": "yes"}, "require_approval"),
    ],
)
def test_a_bad_tool_call_is_400_and_starts_nothing(alice_api, campaign, body, field):
    ArtifactFactory(run=RunFactory(campaign=campaign, state=RunState.COMPLETED), type="Copy")
    before = database()
    error = assert_json_error(post(alice_api, tools_url(campaign), body), 400)
    assert field in error, error
    assert database() == before


@pytest.mark.parametrize("how", ["rejected", "cancelled while waiting"])
def test_a_tool_that_was_never_approved_cannot_be_retried(alice_api, campaign, how):
    run = post(alice_api, tools_url(campaign), {"tool_name": "generate_copy", "require_approval": True}).json()
    if how == "rejected":
        approval_id = run["approvals"][0]["id"]
        post(alice_api, f"/api/runs/{run['id']}/approvals/{approval_id}/", {"decision": "reject"})
    else:
        post(alice_api, f"/api/runs/{run['id']}/cancel/")
    assert get_run(alice_api, run["id"])["state"] == "cancelled"
    before = database()

    error = assert_json_error(post(alice_api, f"/api/runs/{run['id']}/retry/"), 409)

    assert "never approved" in error["detail"]
    assert database() == before
