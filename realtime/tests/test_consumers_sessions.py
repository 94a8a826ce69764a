"""The track-4 hubs (realtime/consumers/sessions.py) over the real ASGI app: each hub's own method
table, and every kind of bad input answered readably with nothing changed."""

from __future__ import annotations

from typing import Any

import pytest

from campaigns.models import Campaign
from campaigns.tests.factories import CampaignFactory, RunFactory
from orchestration import services
from orchestration.models import OrchestrationPlan, OrchestrationRun, RunState
from realtime.signalr import http as signalr
from realtime.signalr.http import connection_token
from realtime.tests.hubs import assert_readable, db, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def path(hub_name: str, user) -> str:
    return f"/hubs/{hub_name}?id={connection_token(signalr.new_connection_id())}&access_token={token_for(user)}"


def stored() -> dict[str, Any]:
    return {
        "campaigns": sorted(Campaign.objects.values_list("public_id", flat=True)),
        "plans": OrchestrationPlan.objects.count(),
        "runs": sorted(OrchestrationRun.objects.values_list("public_id", "state")),
    }


async def error_of(connection, target: str, *arguments: Any) -> str:
    completion = await connection.call(target, *arguments)
    assert "error" in completion, completion
    assert_readable(completion["error"])
    return completion["error"]


async def test_each_hub_has_its_own_methods(hub, users):
    agent = await hub(path=path("agent", users["alice"]))
    orchestrator = await hub(path=path("orchestrator", users["alice"]))
    campaign = await hub(users["alice"])

    assert "Unknown hub method 'SubscribeToCampaign'" in await error_of(agent, "SubscribeToCampaign", "camp_x")
    assert "Unknown hub method 'SendAgentMessage'" in await error_of(orchestrator, "SendAgentMessage", {})
    assert "Unknown hub method 'CreateSession'" in await error_of(campaign, "CreateSession", {"name": "x"})


@pytest.mark.parametrize(
    ("request_object", "error"),
    [
        ({}, "name of CreateSession must be a non-blank string"),
        ({"name": "   "}, "name of CreateSession must be a non-blank string"),
        ({"name": "x" * 201}, "at most 200 characters"),
        ({"name": 7}, "name of CreateSession must be"),
        ({"name": "ok", "agentIds": ["nobody"]}, "Agent 'nobody' not found"),
        ({"name": "ok", "agentIds": "copywriter"}, "agentIds of CreateSession must be an array"),
        ({"name": "ok", "agentIds": [1]}, "agentIds of CreateSession must be an array"),
        ({"name": "ok", "brief": ["x"]}, "brief of CreateSession must be"),
    ],
)
async def test_a_refused_session_is_an_answer_with_success_false(hub, users, request_object, error):
    orchestrator = await hub(path=path("orchestrator", users["alice"]))
    before = await db(stored)()

    completion = await orchestrator.call("CreateSession", request_object)

    answer = completion["result"]
    assert answer["success"] is False and answer["sessionId"] is None and answer["session"] is None
    assert error in answer["errorMessage"], answer
    assert_readable(answer["errorMessage"])
    assert await db(stored)() == before


async def test_a_request_that_is_not_an_object_is_an_error_completion(hub, users):
    orchestrator = await hub(path=path("orchestrator", users["alice"]))
    agent = await hub(path=path("agent", users["alice"]))
    before = await db(stored)()

    assert "The request argument of CreateSession must be an object." == await error_of(
        orchestrator, "CreateSession", "x"
    )
    assert "must be an object" in await error_of(orchestrator, "CreateOrchestrationPlan", [1])
    assert "must be an object" in await error_of(agent, "ExecuteTool", None)
    assert "takes 1 argument; got 2" in await error_of(agent, "SendAgentMessage", {}, {})
    assert "must be a string" in await error_of(orchestrator, "ExecutePlan", 5)
    assert await db(stored)() == before


async def test_plans_refuse_bad_input_and_other_users_sessions(hub, users):
    mine = await db(CampaignFactory)(owner=users["alice"])
    theirs = await db(CampaignFactory)(owner=users["bob"])
    orchestrator = await hub(path=path("orchestrator", users["alice"]))
    before = await db(stored)()

    def plan(**fields: Any) -> dict[str, Any]:
        return {"sessionId": mine.public_id, "goal": "Spring", "strategy": "parallel", **fields}

    assert '"sequential" or "parallel"' in await error_of(orchestrator, "CreateOrchestrationPlan", plan(strategy=1))
    assert '"sequential" or "parallel"' in await error_of(orchestrator, "CreateOrchestrationPlan", plan(strategy="x"))
    assert "goal of CreateOrchestrationPlan" in await error_of(orchestrator, "CreateOrchestrationPlan", plan(goal=" "))
    refused = await error_of(orchestrator, "CreateOrchestrationPlan", plan(availableAgentIds=["ghost"]))
    assert "Agent 'ghost' not found" in refused
    theirs_plan = plan(sessionId=theirs.public_id)
    assert await error_of(orchestrator, "CreateOrchestrationPlan", theirs_plan) == "Session not found."
    assert await error_of(orchestrator, "JoinSession", theirs.public_id) == "Session not found."
    assert await error_of(orchestrator, "ExecutePlan", "plan_nope") == "Plan not found."
    assert await db(stored)() == before

    # Case-insensitive keys (.NET sends PascalCase unless told otherwise) and strategy strings.
    completion = await orchestrator.call(
        "CreateOrchestrationPlan", {"SessionId": mine.public_id, "Goal": "Spring", "Strategy": "Sequential"}
    )
    assert completion["result"]["strategy"] == "sequential" and completion["result"]["sessionId"] == mine.public_id


async def test_message_problems_are_receive_errors_and_start_nothing(hub, users):
    mine = await db(CampaignFactory)(owner=users["alice"])
    other = await db(CampaignFactory)(owner=users["bob"])
    agent = await hub(path=path("agent", users["alice"]))
    before = await db(stored)()

    async def refused(request_object: dict[str, Any]) -> dict[str, Any]:
        completion = await agent.call("SendAgentMessage", {"sessionId": mine.public_id, **request_object})
        assert "error" not in completion, completion  # void: the problem is told as ReceiveError
        errors = [c for c in agent.calls if c.get("target") == "ReceiveError"]
        assert len(errors) == 1, agent.calls
        assert_readable(errors[0]["arguments"][0]["message"])
        return errors[0]["arguments"][0]

    assert (await refused({"agentId": "copywriter", "content": " "}))["code"] == "PROCESSING_ERROR"
    assert (await refused({"agentId": "copywriter", "content": 5}))["code"] == "PROCESSING_ERROR"
    attached = await refused({"agentId": "copywriter", "content": "hi", "attachments": ["a.png"]})
    assert attached["code"] == "PROCESSING_ERROR" and "Attachments are not supported" in attached["message"]
    unknown = await refused({"agentId": 5, "content": "hi"})
    assert unknown["code"] == "AGENT_NOT_FOUND" and unknown["agentId"] is None
    missing = await refused({"sessionId": ["x"], "agentId": "copywriter", "content": "hi"})
    assert missing["code"] == "SESSION_NOT_FOUND" and missing["message"].startswith("sessionId must be a string")
    assert missing["sessionId"] is None and missing["agentId"] == "copywriter"
    theirs = await refused({"sessionId": other.public_id, "agentId": "copywriter", "content": "hi"})
    assert theirs == {
        "code": "SESSION_NOT_FOUND",
        "message": "Session not found.",
        "sessionId": other.public_id,
        "agentId": "copywriter",
    }
    assert await db(stored)() == before


async def test_tool_refusals_are_error_completions_and_start_nothing(hub, users):
    mine = await db(CampaignFactory)(owner=users["alice"])
    agent = await hub(path=path("agent", users["alice"]))
    before = await db(stored)()

    def tool(**fields: Any) -> dict[str, Any]:
        return {"sessionId": mine.public_id, "agentId": "copywriter", "toolName": "generate_copy", **fields}

    assert "its tool is generate_copy" in await error_of(agent, "ExecuteTool", tool(toolName="generate_visual"))
    assert "Unknown parameter 'shell'" in await error_of(agent, "ExecuteTool", tool(parameters={"shell": "ls"}))
    assert "parameters must be an object" in await error_of(agent, "ExecuteTool", tool(parameters="ls"))
    assert "requireApproval of ExecuteTool must be true or false" in await error_of(
        agent, "ExecuteTool", tool(requireApproval="yes")
    )
    assert "Agent 'ghost' not found" in await error_of(agent, "ExecuteTool", tool(agentId="ghost"))
    assert "toolName must be a string" in await error_of(agent, "ExecuteTool", tool(toolName=["generate_copy"]))
    assert "an agent's id is a string" in await error_of(agent, "ExecuteTool", tool(agentId={"a": 1}))
    assert await error_of(agent, "ApproveTool", "apr_nope") == "Approval not found."
    assert "at most 5000 characters" in await error_of(agent, "RejectTool", "apr_nope", "x" * 5001)
    assert await db(stored)() == before


async def test_approvals_of_other_users_and_of_reviews_are_not_tools_to_decide(hub, users):
    theirs = await db(CampaignFactory)(owner=users["bob"])
    run = await db(services.tool_execute)(
        campaign=theirs,
        agent="copywriter",
        tool_name="generate_copy",
        parameters={},
        require_approval=True,
        requested_by=users["bob"],
    )
    bobs_tool = await db(lambda: run.approvals.get().public_id)()
    mine = await db(CampaignFactory)(owner=users["alice"])
    review = await db(RunFactory)(campaign=mine, state=RunState.AWAITING_APPROVAL, steps="completed")
    review_approval = await db(lambda: review.approvals.create(step="generation", reason="Review").public_id)()
    agent = await hub(path=path("agent", users["alice"]))
    before = await db(stored)()

    assert await error_of(agent, "ApproveTool", bobs_tool) == "Approval not found."
    assert "a run's review is decided on the campaign page" in await error_of(agent, "RejectTool", review_approval)
    assert await db(stored)() == before


async def test_a_session_is_not_made_when_the_caller_could_not_join_it(hub, users, settings):
    settings.WS_MAX_SUBSCRIPTIONS = 1
    orchestrator = await hub(path=path("orchestrator", users["alice"]))
    first = (await orchestrator.call("CreateSession", {"name": "First"}))["result"]
    assert first["success"] is True
    before = await db(stored)()

    second = (await orchestrator.call("CreateSession", {"name": "Second"}))["result"]

    assert second["success"] is False and "Too many sessions" in second["errorMessage"]
    assert await db(stored)() == before


async def test_a_queued_tool_and_plan_say_so_on_the_track4_hubs(hub, users, settings):
    """With the account at its limit of active runs (orchestration/fairshare.py), ExecuteTool answers
    status Queued, and a plan's progress says where its run stands in the queue."""
    settings.RUNS_MAX_ACTIVE_PER_USER = 1
    busy = await db(CampaignFactory)(owner=users["alice"])
    await db(services.run_start)(campaign=busy, created_by=users["alice"])
    mine = await db(CampaignFactory)(owner=users["alice"])
    agent = await hub(path=path("agent", users["alice"]))
    request = {"sessionId": mine.public_id, "agentId": "copywriter", "toolName": "generate_copy"}

    completion = await agent.call("ExecuteTool", {**request, "requireApproval": True})

    assert "error" not in completion, completion
    [started] = [call for call in agent.calls if call.get("target") == "ToolExecutionStarted"]
    assert started["arguments"][0]["status"] == "Queued"
    await db(
        lambda: services.run_cancel(
            run=OrchestrationRun.objects.get(public_id=started["arguments"][0]["runId"]), requested_by=users["alice"]
        )
    )()

    other = await db(CampaignFactory)(owner=users["alice"])
    orchestrator = await hub(path=path("orchestrator", users["alice"]))
    plan = await orchestrator.call("CreateOrchestrationPlan", {"sessionId": other.public_id, "goal": "Launch"})
    plan_id = plan["result"]["id"]
    assert "error" not in await orchestrator.call("ExecutePlan", plan_id)
    progress = (await orchestrator.until("OrchestrationProgress"))[-1]["arguments"][0]
    assert progress["planId"] == plan_id and progress["percentage"] == 0
    assert progress["queuePosition"] == 1 and progress["message"] == "Queued: #1 in line"
