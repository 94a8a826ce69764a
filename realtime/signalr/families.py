"""The campaign hub's two method families: native event frames rendered as client-method calls
(docs/SIGNALR.md has the tables). The family is chosen by the method a client subscribed with.
Account and operations events (PROTOCOL.md §11) have one rendering, named after the seeds' hubs."""

from __future__ import annotations

from typing import Any

from realtime.signalr.protocol import camel, invocation

# Method families (the value passed to RealtimeSession.subscribe as ``family``).
TASK012 = "signalr-task012"
REALTIME_API = "signalr-realtime-api"
STREAM = "signalr-stream"  # the account and operations streams


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


def render_frame(family: str, frame: dict[str, Any]) -> str:
    if "stream" in frame:
        return render_stream(frame)
    return render_task012(frame) if family == TASK012 else render_realtime_api(frame)
