from __future__ import annotations

from decimal import Decimal
from operator import attrgetter
from typing import Any

from rest_framework import serializers

from campaigns.api.serializers import StrictCharField
from campaigns.models import Approval, OrchestrationRun, RunStep
from campaigns.payloads import isoformat
from orchestration import plan as plan_


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
    }


def run_payload(run: OrchestrationRun) -> dict[str, Any]:
    return {
        "id": run.public_id,
        "campaign_id": run.campaign.public_id,
        "kind": run.kind,
        "state": run.state,
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


class RunSerializer(serializers.Serializer):
    """Read-only; documents the run's shape for the schema."""

    id = serializers.CharField()
    campaign_id = serializers.CharField()
    kind = serializers.CharField()
    state = serializers.CharField()
    plan = serializers.ListField(child=serializers.CharField())
    steps = serializers.ListField(child=serializers.DictField())
    attempts = serializers.IntegerField()
    progress = serializers.IntegerField()
    usage = serializers.DictField()
    error = serializers.CharField(allow_null=True)
    settings = serializers.DictField()
    cancel_requested = serializers.BooleanField()
    approvals = serializers.ListField(child=serializers.DictField())
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def to_representation(self, instance: OrchestrationRun) -> dict[str, Any]:
        return run_payload(instance)


class RunStartSerializer(serializers.Serializer):
    settings = serializers.JSONField(required=False, default=dict)

    def validate_settings(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise serializers.ValidationError("settings must be a JSON object.")
        return value


class ApprovalDecisionSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(["approve", "reject"])
    comment = StrictCharField(required=False, allow_blank=True, max_length=5000, default="")
    artifact_type = serializers.ChoiceField(list(plan_.GENERATION_STEPS), required=False, allow_null=True)


class RevisionSerializer(serializers.Serializer):
    instructions = StrictCharField(max_length=5000)
