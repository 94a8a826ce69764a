"""Every event a run publishes, one function each: the event names and payload shapes of
PROTOCOL.md §6 live here and nowhere else in orchestration. Each stores the event in the campaign's
log (eventlog.publisher), in the caller's transaction; ``artifact_chunk`` is transient.
"""

from __future__ import annotations

from typing import Any

from accounts.services import account_publish
from campaigns.payloads import isoformat
from eventlog.publisher import publish, publish_transient
from orchestration import plan as plan_
from orchestration.models import (
    Approval,
    Artifact,
    ComplianceAudit,
    OrchestrationPlan,
    OrchestrationRun,
    RunKind,
    RunState,
    RunStep,
)
from orchestration.payloads import artifact_payload, audit_payload, audit_summary, plan_payload


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


def run_queued(run: OrchestrationRun, position: int | None, limit: int) -> None:
    """The run waits for a share of the workers (orchestration/fairshare.py): its place in its
    account's queue (1: next) and the account's limit. Said when it is queued and when its place changes."""
    data = {"run_id": run.public_id, "position": position, "limit": limit}
    plan_id = _plan_id(run)
    if plan_id is not None:
        data["plan_id"] = plan_id
    _run_event(run, "run.queued", data)


def campaign_started(run: OrchestrationRun) -> None:
    _run_event(run, "campaign.started", {"run_id": run.public_id, "plan": run.plan})
    _account_event(run, "run.started")


def _plan_id(run: OrchestrationRun) -> str | None:
    plan = getattr(run, "orchestration_plan", None)  # a run executed from a plan (track-4 ExecutePlan)
    return plan.public_id if plan is not None else None


def progress(run: OrchestrationRun, percentage: int, message: str, step: str | None = None) -> None:
    data: dict[str, Any] = {"percentage": percentage, "message": message, "step": step}
    plan_id = _plan_id(run)
    if plan_id is not None:
        data["plan_id"] = plan_id
    _run_event(run, "progress", data)


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
    if approval.tool:  # a tool run's: which tool, whose, with what
        data["tool"] = approval.tool
    _run_event(run, "approval.required", data)


def approval_resolved(run: OrchestrationRun, approval: Approval, decision: str, by: str) -> None:
    _run_event(run, "approval.resolved", {"approval_id": approval.public_id, "decision": decision, "by": by})


def plan_created(plan: OrchestrationPlan) -> None:
    publish(plan.campaign, "plan.created", {"plan": plan_payload(plan)})


def agent_message(run: OrchestrationRun, agent: str, content: str, sent_by: str) -> None:
    """What a person asked an agent for (a message or a revision's instructions): the conversation."""
    _run_event(run, "agent.message", {"agent": agent, "content": content, "sent_by": sent_by, "run_id": run.public_id})


def run_outcome(run: OrchestrationRun) -> None:
    """A finished run's outcome for what it was started as: a plan (``plan.completed``) or a tool
    (``tool.completed``). After the run's own last event."""
    artifacts = list(run.artifacts.order_by("type", "version"))
    success = run.state == RunState.COMPLETED
    error = run.error or None if not success else None
    plan_id = _plan_id(run)
    if plan_id is not None:
        data = {
            "plan_id": plan_id,
            "run_id": run.public_id,
            "success": success,
            "artifacts": [artifact_payload(artifact) for artifact in artifacts],
            "error": error or (None if success else f"The run was {run.state}."),
        }
        _run_event(run, "plan.completed", data)
    if run.kind == RunKind.TOOL:
        step = run.steps.first()
        if success:
            output = artifacts[-1].content if artifacts else _audit_output(run)
        else:
            output = error or f"The run was {run.state}."
        durations = [step.duration_ms] if step is not None and step.duration_ms is not None else []
        data = {
            "run_id": run.public_id,
            "tool_name": plan_.STEP_TOOLS[run.plan[0]],
            "agent": plan_.STEP_AGENTS[run.plan[0]],
            "success": success,
            "output": output,
            "artifact_id": artifacts[-1].public_id if success and artifacts else None,
            "execution_time_ms": sum(durations) if durations else None,
        }
        _run_event(run, "tool.completed", data)


def _audit_output(run: OrchestrationRun) -> str:
    audit = ComplianceAudit.objects.filter(run=run).first()
    if audit is None:
        return ""
    return audit_summary(audit.score, audit.is_compliant, audit.feedback)
