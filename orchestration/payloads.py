"""The one wire shape of each object of a run, shared by REST answers, events and snapshots."""

from __future__ import annotations

from decimal import Decimal
from operator import attrgetter
from typing import Any

from campaigns.payloads import isoformat
from orchestration.models import Approval, Artifact, ComplianceAudit, OrchestrationPlan, OrchestrationRun, RunStep
from orchestration.selectors import queue_position


def artifact_payload(artifact: Artifact) -> dict[str, Any]:
    return {
        "id": artifact.public_id,
        "campaign_id": artifact.campaign.public_id,
        "run_id": artifact.run.public_id,
        "type": artifact.type,
        "content": artifact.content,
        "metadata": artifact.metadata,
        "created_at": isoformat(artifact.created_at),
        "agent_name": artifact.agent_name,
        "version": artifact.version,
    }


def audit_payload(audit: ComplianceAudit) -> dict[str, Any]:
    """The ``compliance.completed`` event data and the snapshot's ``compliance``."""
    return {
        "is_compliant": audit.is_compliant,
        "compliance_score": audit.score,
        "issues": audit.issues,
        "feedback": audit.feedback,
        "audited_at": isoformat(audit.audited_at),
    }


def audit_summary(score: int, is_compliant: bool, feedback: str) -> str:
    """An audit in a sentence: the auditor's answer in a conversation, a check_compliance tool's output."""
    verdict = "compliant" if is_compliant else "not compliant"
    return f"Score {score}/100, {verdict}. {feedback}".strip()


def step_payload(step: RunStep) -> dict[str, Any]:
    return {
        "step": step.name,
        "agent": step.agent,
        "status": step.status,
        "attempt": step.attempt,
        "started_at": isoformat(step.started_at),
        "finished_at": isoformat(step.finished_at),
        "duration_ms": step.duration_ms,
        "checkpoint_id": step.checkpoint_id or None,
        "error": step.error or None,
    }


def approval_payload(approval: Approval) -> dict[str, Any]:
    return {
        "id": approval.public_id,
        "run_id": approval.run.public_id,
        "step": approval.step,
        "reason": approval.reason,
        "state": approval.state,
        "comment": approval.comment,
        "decided_by": approval.decided_by.get_username() if approval.decided_by else None,
        "created_at": isoformat(approval.created_at),
        "decided_at": isoformat(approval.decided_at),
        "tool": approval.tool or None,
    }


def plan_payload(plan: OrchestrationPlan) -> dict[str, Any]:
    run = plan.run
    return {
        "id": plan.public_id,
        "session_id": plan.campaign.public_id,
        "goal": plan.goal,
        "strategy": plan.strategy,
        "steps": plan.steps,
        "run_id": run.public_id if run is not None else None,
        "created_at": isoformat(plan.created_at),
    }


def run_payload(run: OrchestrationRun) -> dict[str, Any]:
    return {
        "id": run.public_id,
        "campaign_id": run.campaign.public_id,
        "kind": run.kind,
        "state": run.state,
        "queue_position": queue_position(run),  # 1: next of its account's queued runs to start; None unless queued
        "plan": run.plan,
        "steps": [step_payload(step) for step in run.steps.all()],
        "attempts": run.attempts,
        "progress": run.progress,
        "usage": {
            "prompt_tokens": run.prompt_tokens,
            "completion_tokens": run.completion_tokens,
            "cost": f"{Decimal(run.cost):.6f}",
        },
        "error": run.error or None,
        "settings": run.settings,
        "cancel_requested": run.cancel_requested,
        "approvals": [approval_payload(a) for a in sorted(run.approvals.all(), key=attrgetter("created_at", "pk"))],
        "created_at": isoformat(run.created_at),
        "started_at": isoformat(run.started_at),
        "finished_at": isoformat(run.finished_at),
    }


def active_run_payload(run: OrchestrationRun) -> dict[str, Any]:
    """A run in the operators' list of active runs: who, what and how far (not its steps)."""
    return {
        "id": run.public_id,
        "campaign_id": run.campaign.public_id,
        "campaign_name": run.campaign.name,
        "owner": run.campaign.owner.get_username(),
        "state": run.state,
        "progress": run.progress,
        "created_at": isoformat(run.created_at),
    }
