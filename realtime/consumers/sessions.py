"""The track-4 hubs, ``/hubs/orchestrator`` and ``/hubs/agent`` (docs/SIGNALR.md): the campaign hub's
machinery (protocols, authentication, limits, subscriptions, delivery, stateful reconnect) with their
own method tables and renderings (realtime.signalr.families ORCHESTRATOR and AGENT).

A session is a campaign; joining one subscribes to its event log, rendered as the hub's client
methods. Every method calls the orchestration services that REST and the admin call too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import ValidationError

from campaigns.errors import NotFound, ServiceError
from campaigns.models import NAME_MAX_LENGTH, Campaign
from campaigns.payloads import isoformat
from eventlog.reads import campaign_log
from orchestration import plan as plan_
from orchestration import services
from orchestration.models import GOAL_MAX_LENGTH, OrchestrationPlan, RunState
from orchestration.payloads import plan_payload
from orchestration.selectors import plan_get_visible
from realtime.consumers.base import STREAMS, ClientError
from realtime.consumers.signalr import HubMethod, SignalRHubConsumer, method_table
from realtime.signalr.families import AGENT, ORCHESTRATOR
from realtime.signalr.protocol import camel, invocation

logger = logging.getLogger("realtime.connections")

T = TypeVar("T")
CONTENT_MAX_LENGTH = 5_000
SESSION_NOT_FOUND = "Session not found."
# ToolExecutionStarted's status, by the tool run's state (a queued one waits for a share of the workers).
TOOL_STATUS = {RunState.QUEUED: "Queued", RunState.AWAITING_APPROVAL: "AwaitingApproval"}


class Request:
    """A hub method's request object: keys matched without regard to case (as ASP.NET Core binds
    them), each value checked, a readable error naming the method and the key otherwise."""

    def __init__(self, method: str, data: dict[str, Any]) -> None:
        self.method = method
        self.values = {str(key).lower(): value for key, value in data.items()}

    def error(self, key: str, expected: str) -> ClientError:
        return ClientError("bad_request", f"{key} of {self.method} must be {expected}.")

    def text(self, key: str, *, max_length: int, required: bool = True) -> str:
        value = self.values.get(key.lower())
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_length:
            raise self.error(key, f"a non-blank string of at most {max_length} characters")
        return value

    def names(self, key: str) -> list[str] | None:
        """A list of strings, or None when left out or null."""
        value = self.values.get(key.lower())
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value) or len(value) > 20:
            raise self.error(key, "an array of at most 20 strings")
        return value

    def flag(self, key: str) -> bool:
        value = self.values.get(key.lower(), False)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def raw(self, key: str) -> Any:
        return self.values.get(key.lower())


def readable(exc: ValidationError) -> str:
    return " ".join(exc.messages) if exc.messages else "Invalid request."


class SessionHubConsumer(SignalRHubConsumer):
    """What both track-4 hubs share: joining and leaving sessions, calling the services."""

    family = AGENT

    async def visible_session(self, session_id: Any) -> Campaign:
        if not isinstance(session_id, str):
            raise ClientError("bad_request", "sessionId must be a string (a session's id, camp_…).")
        try:
            return await self.visible_campaign(session_id)
        except ClientError as error:
            if error.code == "not_found":
                raise ClientError("not_found", SESSION_NOT_FOUND) from None
            raise

    async def join_session(self, session_id: str) -> None:
        await self.follow(campaign_log(await self.visible_session(session_id)), None, self.family)

    async def leave_session(self, session_id: str) -> None:
        if session_id not in STREAMS:  # leaving a session one is not in is not an error
            await self.drop_subscription(session_id)

    async def ensure_joined(self, campaign: Campaign) -> None:
        """The caller of a method that starts work in a session sees it: joined, if it was not (its
        Completion is the method's, not the subscription's)."""
        if campaign.public_id in self.subscriptions:
            return
        current, self.invocation = self.invocation, None
        try:
            await self.follow(campaign_log(campaign), None, self.family)
        finally:
            self.invocation = current

    async def call(self, function: Callable[..., T], **kwargs: Any) -> T:
        """A service, in a worker thread; its refusals as error Completions (readable, never internal)."""
        try:
            return await database_sync_to_async(function)(**kwargs)
        except NotFound as exc:
            raise ClientError("not_found", str(exc)) from None
        except ServiceError as exc:
            raise ClientError(exc.code, str(exc)) from None
        except ValidationError as exc:
            raise ClientError("bad_request", readable(exc)) from None


class OrchestratorHubConsumer(SessionHubConsumer):
    """``/hubs/orchestrator``: sessions and plans."""

    family = ORCHESTRATOR

    async def create_session(self, request: dict[str, Any]) -> None:
        """``{sessionId, success, session, errorMessage}``: a refusal is an answer with success false
        (as the seed's hub answers), not an error Completion; the caller joins the new session."""
        body = Request("CreateSession", request)
        try:
            if len(self.subscriptions) >= settings.WS_MAX_SUBSCRIPTIONS:  # joining it would fail: make nothing
                raise ClientError("too_many_subscriptions", "Too many sessions on one connection; leave one first.")
            name = body.text("name", max_length=NAME_MAX_LENGTH)
            agents = body.names("agentIds") or list(plan_.AGENTS)
            campaign = await self.call(
                services.session_create,
                owner=self.user,
                name=name,
                agents=agents,
                brief=body.text("brief", max_length=20_000, required=False),
            )
        except ClientError as error:
            failure = {"sessionId": None, "success": False, "session": None, "errorMessage": error.message}
            await self.complete(failure, has_result=True)
            return
        session = {
            "id": campaign.public_id,
            "name": campaign.name,
            "brief": campaign.brief,
            "agentIds": agents,
            "createdAt": isoformat(campaign.created_at),
        }
        self.invocation.result = {
            "sessionId": campaign.public_id,
            "success": True,
            "session": session,
            "errorMessage": None,
        }
        self.invocation.has_result = True
        await self.follow(campaign_log(campaign), None, self.family)  # answers the invocation
        await self.complete()
        await self.write(invocation("SessionCreated", session))

    async def create_orchestration_plan(self, request: dict[str, Any]) -> None:
        body = Request("CreateOrchestrationPlan", request)
        campaign = await self.visible_session(body.raw("sessionId"))
        strategy = body.raw("strategy")
        if strategy is None:
            strategy = "parallel"
        if not isinstance(strategy, str) or strategy.lower() not in ("sequential", "parallel"):
            raise body.error("strategy", '"sequential" or "parallel"')
        plan = await self.call(
            services.plan_create,
            campaign=campaign,
            goal=body.text("goal", max_length=GOAL_MAX_LENGTH),
            strategy=strategy.lower(),
            agents=body.names("availableAgentIds") or None,
            created_by=self.user,
        )
        await self.complete(camel(plan_payload(plan)), has_result=True)

    async def execute_plan(self, plan_id: str) -> None:
        plan: OrchestrationPlan = await self.call(plan_get_visible, user=self.user, public_id=plan_id)
        await self.ensure_joined(plan.campaign)
        await self.call(services.plan_execute, plan=plan, created_by=self.user)


# What SendAgentMessage's ReceiveError says, by what the service refused.
AGENT_NOT_FOUND, SESSION_MISSING, BUSY, PROCESSING_ERROR = (
    "AGENT_NOT_FOUND",
    "SESSION_NOT_FOUND",
    "BUSY",
    "PROCESSING_ERROR",
)


class AgentHubConsumer(SessionHubConsumer):
    """``/hubs/agent``: messages to an agent (answered by its next version, streamed), tools."""

    family = AGENT

    async def send_agent_message(self, request: dict[str, Any]) -> None:
        """Void; a problem is told as ReceiveError to the caller (as the seed's hub does)."""
        body = Request("SendAgentMessage", request)
        session_id, agent = body.raw("sessionId"), body.raw("agentId")
        try:
            campaign = await self.visible_session(session_id)
        except ClientError as error:
            await self.receive_error(SESSION_MISSING, error.message, session_id, agent)
            return
        if not isinstance(agent, str) or agent not in plan_.AGENT_STEPS:
            await self.receive_error(AGENT_NOT_FOUND, services.UnknownAgent(agent).args[0], session_id, agent)
            return
        try:
            content = body.text("content", max_length=CONTENT_MAX_LENGTH)
            if body.raw("attachments"):
                raise ClientError("bad_request", "Attachments are not supported; put what the agent needs in content.")
            await self.ensure_joined(campaign)
            await database_sync_to_async(services.agent_message)(
                campaign=campaign, agent=agent, content=content, sent_by=self.user
            )
        except services.Busy:
            message = f"The {agent} is busy: this session has an active run; wait for it to finish or cancel it."
            await self.receive_error(BUSY, message, session_id, agent)
        except (ServiceError, ClientError) as exc:
            await self.receive_error(PROCESSING_ERROR, str(exc), session_id, agent)

    async def receive_error(self, code: str, message: str, session_id: Any, agent: Any) -> None:
        shown = {"sessionId": session_id if isinstance(session_id, str) else None}
        shown["agentId"] = agent if isinstance(agent, str) else None
        await self.write(invocation("ReceiveError", {"code": code, "message": message, **shown}))

    async def execute_tool(self, request: dict[str, Any]) -> None:
        """ToolExecutionStarted to the caller; the approval (if asked for) and the result to the session."""
        body = Request("ExecuteTool", request)
        campaign = await self.visible_session(body.raw("sessionId"))
        agent, tool_name = body.raw("agentId"), body.raw("toolName")
        require_approval = body.flag("requireApproval")
        await self.ensure_joined(campaign)
        run = await self.call(
            services.tool_execute,
            campaign=campaign,
            agent=agent,
            tool_name=tool_name,
            parameters=body.raw("parameters"),
            require_approval=require_approval,
            requested_by=self.user,
        )
        started = {
            "toolName": tool_name,
            "status": TOOL_STATUS.get(run.state, "Running"),
            "agentId": agent,
            "sessionId": campaign.public_id,
            "runId": run.public_id,
        }
        await self.write(invocation("ToolExecutionStarted", started))

    async def approve_tool(self, approval_id: str) -> None:
        await self.decide_tool(approval_id, "approve", "")

    async def reject_tool(self, approval_id: str, reason: Any = None) -> None:
        if reason is not None and (not isinstance(reason, str) or len(reason) > CONTENT_MAX_LENGTH):
            raise ClientError(
                "bad_request",
                f"The reason argument of RejectTool must be a string of at most {CONTENT_MAX_LENGTH} characters.",
            )
        await self.decide_tool(approval_id, "reject", reason or "")

    async def decide_tool(self, approval_id: str, decision: str, comment: str) -> None:
        def decide() -> None:
            approval = services.approval_get_visible(self.user, approval_id)
            if not approval.tool:
                raise NotFound("Approval not found; a run's review is decided on the campaign page or the REST API.")
            services.approval_decide(
                run=approval.run,
                approval_public_id=approval_id,
                decision=decision,
                comment=comment,
                decided_by=self.user,
            )

        await self.call(decide)


_SESSION = ("sessionId",)
_REQUEST = ("request",)
OrchestratorHubConsumer.methods = method_table(
    HubMethod("CreateSession", OrchestratorHubConsumer.create_session, _REQUEST, objects=_REQUEST),
    HubMethod("JoinSession", SessionHubConsumer.join_session, _SESSION),
    HubMethod("LeaveSession", SessionHubConsumer.leave_session, _SESSION),
    HubMethod("CreateOrchestrationPlan", OrchestratorHubConsumer.create_orchestration_plan, _REQUEST, objects=_REQUEST),
    HubMethod("ExecutePlan", OrchestratorHubConsumer.execute_plan, ("planId",)),
)
AgentHubConsumer.methods = method_table(
    HubMethod("JoinSession", SessionHubConsumer.join_session, _SESSION),
    HubMethod("LeaveSession", SessionHubConsumer.leave_session, _SESSION),
    HubMethod("SendAgentMessage", AgentHubConsumer.send_agent_message, _REQUEST, objects=_REQUEST),
    HubMethod("ExecuteTool", AgentHubConsumer.execute_tool, _REQUEST, objects=_REQUEST),
    HubMethod("ApproveTool", AgentHubConsumer.approve_tool, ("approvalId",)),
    HubMethod("RejectTool", AgentHubConsumer.reject_tool, ("approvalId",), ("reason",)),
)
