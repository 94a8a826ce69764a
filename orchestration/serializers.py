from __future__ import annotations

from decimal import Decimal
from operator import attrgetter
from typing import Any

from rest_framework import serializers

from campaigns.api.serializers import SettingsField, StrictCharField
from campaigns.models import Approval, ApprovalState, OrchestrationRun, RunKind, RunState, RunStep, StepStatus
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


class RunStepSerializer(serializers.Serializer):
    """Read-only; documents a step of a run (``step_payload``)."""

    step = serializers.ChoiceField(list(plan_.FULL_PLAN))
    agent = serializers.CharField()
    status = serializers.ChoiceField(StepStatus.choices)
    attempt = serializers.IntegerField(min_value=0)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(min_value=0, allow_null=True)
    checkpoint_id = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_null=True)


class ApprovalSerializer(serializers.Serializer):
    """Read-only; documents an approval (``approval_payload``)."""

    id = serializers.CharField()
    run_id = serializers.CharField()
    step = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)
    state = serializers.ChoiceField(ApprovalState.choices)
    comment = serializers.CharField(allow_blank=True)
    decided_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField(min_value=0)
    completion_tokens = serializers.IntegerField(min_value=0)
    cost = serializers.DecimalField(max_digits=12, decimal_places=6, min_value=0)


class RunSerializer(serializers.Serializer):
    """Read-only; documents the run's shape for the schema."""

    id = serializers.CharField()
    campaign_id = serializers.CharField()
    kind = serializers.ChoiceField(RunKind.choices)
    state = serializers.ChoiceField(RunState.choices)
    plan = serializers.ListField(child=serializers.ChoiceField(list(plan_.FULL_PLAN)))
    steps = RunStepSerializer(many=True)
    attempts = serializers.IntegerField(min_value=0)
    progress = serializers.IntegerField(min_value=0, max_value=100)
    usage = UsageSerializer()
    error = serializers.CharField(allow_null=True)
    settings = SettingsField()
    cancel_requested = serializers.BooleanField()
    approvals = ApprovalSerializer(many=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def to_representation(self, instance: OrchestrationRun) -> dict[str, Any]:
        return run_payload(instance)


class RunStartSerializer(serializers.Serializer):
    settings = SettingsField(required=False, default=dict)

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
