"""Every event a run publishes, one function each: the event names and payload shapes of
PROTOCOL.md §6 live here and nowhere else in orchestration. Each stores the event in the campaign's
log (eventlog.publisher), in the caller's transaction; ``artifact_chunk`` is transient.
"""

from __future__ import annotations

from typing import Any

from accounts.services import account_publish
from campaigns.payloads import isoformat
from eventlog.publisher import publish, publish_transient
from orchestration.models import Approval, Artifact, ComplianceAudit, OrchestrationRun, RunState, RunStep
from orchestration.payloads import artifact_payload, audit_payload


def _run_event(run: OrchestrationRun, event: str, data: dict[str, Any]) -> None:
    publish(run.campaign, event, data, run_id=run.public_id)


# The account stream's run events (PROTOCOL.md §11), by the state a run finished in.
ACCOUNT_RUN_EVENTS = {
    RunState.COMPLETED: "run.completed",
    RunState.FAILED: "run.failed",
    RunState.CANCELLED: "run.cancelled",
}


def _account_event(run: OrchestrationRun, event: str) -> None:
    """A run's lifecycle on its campaign owner's account stream."""
    data = {"campaign_id": run.campaign.public_id, "run_id": run.public_id, "state": run.state}
    account_publish(run.campaign.owner_id, event, data)


def state_changed(run: OrchestrationRun, state: str, previous: str | None) -> None:
    _run_event(run, "orchestration.state_changed", {"state": state, "previous_state": previous})
    if state in ACCOUNT_RUN_EVENTS:
        _account_event(run, ACCOUNT_RUN_EVENTS[state])


def campaign_started(run: OrchestrationRun) -> None:
    _run_event(run, "campaign.started", {"run_id": run.public_id, "plan": run.plan})
    _account_event(run, "run.started")


def progress(run: OrchestrationRun, percentage: int, message: str) -> None:
    _run_event(run, "progress", {"percentage": percentage, "message": message})


def agent_thought(run: OrchestrationRun, agent: str, text: str) -> None:
    _run_event(run, "agent.thought", {"agent": agent, "thought": text})


def step_started(run: OrchestrationRun, step: RunStep) -> None:
    _run_event(run, "step.started", {"step": step.name, "agent": step.agent, "attempt": step.attempt})


def step_completed(run: OrchestrationRun, step: RunStep) -> None:
    data = {"step": step.name, "agent": step.agent, "attempt": step.attempt, "duration_ms": step.duration_ms}
    _run_event(run, "step.completed", data)
    _run_event(run, "checkpoint.created", {"checkpoint_id": step.checkpoint_id, "step": step.name})


def artifact_chunk(run: OrchestrationRun, artifact_type: str, text: str, index: int, *, complete: bool) -> None:
    data = {"artifact_type": artifact_type, "chunk": text, "chunk_index": index, "is_complete": complete}
    publish_transient(run.campaign, "artifact.chunk", data, run_id=run.public_id)


def artifact_generated(run: OrchestrationRun, artifact: Artifact) -> None:
    _run_event(run, "artifact.generated", {"artifact": artifact_payload(artifact)})


def usage_updated(run: OrchestrationRun) -> None:
    _run_event(run, "usage.updated", usage_totals(run))


def usage_totals(run: OrchestrationRun) -> dict[str, object]:
    return {"prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens, "cost": run.cost}


def compliance_completed(run: OrchestrationRun, audit: ComplianceAudit) -> None:
    _run_event(run, "compliance.completed", audit_payload(audit))


def campaign_completed(run: OrchestrationRun) -> None:
    _run_event(run, "campaign.completed", {"run_id": run.public_id})


def generation_failed(run: OrchestrationRun, step: RunStep | None, message: str) -> None:
    data = {
        "error_message": message,
        "failed_at": isoformat(run.finished_at),
        "step": step.name if step else None,
        "attempts": step.attempt if step else 0,
    }
    _run_event(run, "generation.failed", data)


def run_cancelled(run: OrchestrationRun) -> None:
    _run_event(run, "run.cancelled", {"run_id": run.public_id, "requested_by": run.cancel_requested_by})


def approval_required(run: OrchestrationRun, approval: Approval) -> None:
    data = {"approval_id": approval.public_id, "step": approval.step, "reason": approval.reason}
    _run_event(run, "approval.required", data)


def approval_resolved(run: OrchestrationRun, approval: Approval, decision: str, by: str) -> None:
    _run_event(run, "approval.resolved", {"approval_id": approval.public_id, "decision": decision, "by": by})
