"""The campaign hub's two method families: native event frames rendered as client-method calls
(docs/SIGNALR.md has the tables). The family is chosen by the method a client subscribed with.
Account and operations events (PROTOCOL.md §11) have one rendering, named after the seeds' hubs."""

from __future__ import annotations

from typing import Any

from orchestration.payloads import audit_summary
from orchestration.plan import STEP_AGENTS
from realtime.signalr.protocol import camel, invocation

# Method families (the value passed to RealtimeSession.subscribe as ``family``).
TASK012 = "signalr-task012"
REALTIME_API = "signalr-realtime-api"
STREAM = "signalr-stream"  # the account and operations streams
ORCHESTRATOR = "signalr-orchestrator"  # /hubs/orchestrator's sessions (track-4)
AGENT = "signalr-agent"  # /hubs/agent's sessions (track-4)


def orchestration_event(frame: dict[str, Any]) -> dict[str, Any]:
    """The native event frame (PROTOCOL.md §5) in camelCase, without the socket's ``type`` key."""
    return camel({key: value for key, value in frame.items() if key != "type"})


def render_task012(frame: dict[str, Any]) -> str:
    """Every event as ReceiveOrchestrationEvent; artifacts also as ReceiveArtifactUpdate."""
    text = invocation("ReceiveOrchestrationEvent", orchestration_event(frame))
    if frame.get("event") == "artifact.generated":
        update = {
            "campaignId": frame.get("campaign_id"),
            "runId": frame.get("run_id"),
            "sequence": frame.get("sequence"),
            "artifact": camel(frame.get("data", {}).get("artifact")),
        }
        text += invocation("ReceiveArtifactUpdate", update)
    return text


def render_realtime_api(frame: dict[str, Any]) -> str:
    """The realtime-api seed's client methods; events it has no method for are not sent."""
    event, campaign_id, data = frame.get("event"), frame.get("campaign_id"), frame.get("data") or {}
    if event == "campaign.started":
        return invocation("OnCampaignStarted", campaign_id)
    if event == "artifact.generated":
        return invocation("OnArtifactGenerated", camel(data.get("artifact")))
    if event == "artifact.chunk":
        return invocation("OnChunkReceived", {"campaignId": campaign_id, **camel(data)})
    if event == "compliance.completed":
        return invocation("OnComplianceCheckCompleted", {"campaignId": campaign_id, **camel(data)})
    if event == "campaign.completed":
        return invocation("OnCampaignCompleted", campaign_id)
    if event == "generation.failed":
        return invocation("OnGenerationFailed", {"campaignId": campaign_id, **camel(data)})
    return ""


# Account and operations events -> the seeds' client methods (TaskHub, SpendNotificationHub,
# WebhookDeliveryHub, SystemNotificationHub, AdminNotificationHub).
STREAM_METHODS = {
    "run.started": "TaskStarted",
    "run.completed": "TaskCompleted",
    "run.failed": "TaskCompleted",
    "run.cancelled": "TaskCompleted",
    "spend.updated": "SpendUpdate",
    "budget.alert": "BudgetAlert",
    "webhook.delivered": "WebhookDelivered",
    "webhook.failed": "WebhookFailed",
    "system.alert": "SystemAlert",
    "provider.health_changed": "ProviderHealthChanged",
    "config.changed": "ConfigurationChanged",
}


def render_stream(frame: dict[str, Any]) -> str:
    """An account or operations event: its data in camelCase, with ``event``, ``stream``, ``sequence``
    (to resume from) and ``emittedAt`` beside it."""
    method = STREAM_METHODS.get(frame.get("event", ""))
    if method is None:
        return ""
    payload = {key: frame.get(key) for key in ("event", "stream", "sequence", "emitted_at")}
    return invocation(method, camel({**(frame.get("data") or {}), **payload}))


def render_orchestrator(frame: dict[str, Any]) -> str:
    """Plans: made, progressing (runs executed from a plan only), completed."""
    event, session_id, data = frame.get("event"), frame.get("campaign_id"), frame.get("data") or {}
    if event == "plan.created":
        return invocation("OrchestrationPlanCreated", camel(data.get("plan")))
    if event == "progress" and data.get("plan_id"):
        progress = {
            "planId": data["plan_id"],
            "sessionId": session_id,
            "runId": frame.get("run_id"),
            "percentage": data.get("percentage"),
            "currentStep": data.get("step"),
            "message": data.get("message"),
        }
        return invocation("OrchestrationProgress", progress)
    if event == "plan.completed":
        return invocation("OrchestrationCompleted", {"sessionId": session_id, **camel(data)})
    if event == "run.queued" and data.get("plan_id"):  # waiting for a share of the workers: 0 %, its place
        progress = {
            "planId": data["plan_id"],
            "sessionId": session_id,
            "runId": frame.get("run_id"),
            "percentage": 0,
            "currentStep": None,
            "message": f"Queued: #{data.get('position')} in line",
            "queuePosition": data.get("position"),
        }
        return invocation("OrchestrationProgress", progress)
    return ""


def _agent_error(session_id: Any, agent: Any, message: Any) -> str:
    return invocation(
        "ReceiveError", {"code": "PROCESSING_ERROR", "message": message, "sessionId": session_id, "agentId": agent}
    )


def render_agent(frame: dict[str, Any]) -> str:
    """Conversations with the agents: messages, streamed answers, tools and their approvals."""
    event, session_id, data = frame.get("event"), frame.get("campaign_id"), frame.get("data") or {}
    about = {"sessionId": session_id, "runId": frame.get("run_id")}
    if event == "agent.message":
        message = {"agentId": data.get("agent"), "content": data.get("content"), "sentBy": data.get("sent_by")}
        return invocation("ReceiveAgentMessage", {**about, **message})
    if event == "artifact.chunk":
        if data.get("is_complete") and not data.get("chunk"):
            return ""  # the end of a stream: ReceiveAgentResponse follows with the whole answer
        response = {"content": data.get("chunk"), "isComplete": False, "chunkIndex": data.get("chunk_index")}
        return invocation(
            "ReceiveStreamingUpdate",
            {**about, "agentId": STEP_AGENTS.get(data.get("artifact_type")), "response": response},
        )
    if event == "artifact.generated":
        artifact = data.get("artifact") or {}
        response = {
            "content": artifact.get("content"),
            "isComplete": True,
            "artifactId": artifact.get("id"),
            "artifactType": artifact.get("type"),
            "version": artifact.get("version"),
        }
        return invocation(
            "ReceiveAgentResponse", {**about, "agentId": artifact.get("agent_name"), "response": response}
        )
    if event == "compliance.completed":
        summary = audit_summary(data.get("compliance_score"), data.get("is_compliant"), data.get("feedback") or "")
        response = {"content": summary, "isComplete": True, "artifactId": None, "compliance": camel(data)}
        return invocation("ReceiveAgentResponse", {**about, "agentId": STEP_AGENTS["audit"], "response": response})
    if event == "approval.required" and data.get("tool"):
        tool = data["tool"]
        approval = {
            "id": data.get("approval_id"),
            "toolName": tool.get("tool_name"),
            "parameters": tool.get("parameters"),
            "agentId": tool.get("agent"),
            "reason": data.get("reason"),
        }
        return invocation("ToolApprovalRequired", {**about, **approval})
    if event == "tool.completed":
        result = {
            "success": data.get("success"),
            "output": data.get("output"),
            "executionTime": data.get("execution_time_ms"),
            "toolName": data.get("tool_name"),
            "agentId": data.get("agent"),
            "artifactId": data.get("artifact_id"),
        }
        return invocation("ToolExecutionCompleted", {**about, **result})
    if event == "generation.failed":
        return _agent_error(session_id, STEP_AGENTS.get(data.get("step")), data.get("error_message"))
    return ""


RENDERERS = {
    TASK012: render_task012,
    REALTIME_API: render_realtime_api,
    ORCHESTRATOR: render_orchestrator,
    AGENT: render_agent,
}


def render_frame(family: str, frame: dict[str, Any]) -> str:
    if "stream" in frame:
        return render_stream(frame)
    return RENDERERS.get(family, render_realtime_api)(frame)
