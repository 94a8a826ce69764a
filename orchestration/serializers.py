from __future__ import annotations

from typing import Any

from django.db import models
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from campaigns.api.fields import FlatListField, SettingsField, StrictBooleanField, StrictCharField
from campaigns.models import Campaign
from orchestration import plan as plan_
from orchestration.models import (
    GOAL_MAX_LENGTH,
    ApprovalState,
    Artifact,
    OrchestrationRun,
    RunKind,
    RunState,
    StepStatus,
    Strategy,
)
from orchestration.payloads import artifact_payload, run_payload


class CampaignSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    name = StrictCharField(max_length=Campaign._meta.get_field("name").max_length)
    brief = StrictCharField(max_length=Campaign._meta.get_field("brief").max_length)
    audience = StrictCharField(
        max_length=Campaign._meta.get_field("audience").max_length, required=False, allow_blank=True
    )
    tone = StrictCharField(max_length=Campaign._meta.get_field("tone").max_length, required=False, allow_blank=True)
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    state = serializers.CharField(read_only=True, default="idle", help_text="State of the latest run, or idle.")
    latest_run_id = serializers.CharField(
        source="latest_run_public_id", read_only=True, default=None, allow_null=True, help_text="null until it ran."
    )
    last_sequence = serializers.IntegerField(read_only=True)

    # ``settings`` keeps the model field's validators; only its documented type changes.
    serializer_field_mapping = {**serializers.ModelSerializer.serializer_field_mapping, models.JSONField: SettingsField}

    class Meta:
        model = Campaign
        fields = [
            "id",
            "name",
            "brief",
            "audience",
            "tone",
            "settings",
            "owner",
            "state",
            "latest_run_id",
            "last_sequence",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def validate_settings(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise serializers.ValidationError("settings must be a JSON object.")
        return value


class ArtifactSerializer(serializers.ModelSerializer):
    """Read-only; the representation is the one wire shape of an artifact."""

    id = serializers.CharField(source="public_id")
    campaign_id = serializers.CharField(source="campaign.public_id")
    run_id = serializers.CharField(source="run.public_id")

    class Meta:
        model = Artifact
        fields = ["id", "campaign_id", "run_id", "type", "content", "metadata", "created_at", "agent_name", "version"]
        read_only_fields = fields

    def to_representation(self, instance: Artifact) -> dict[str, Any]:
        return artifact_payload(instance)


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
    queue_position = serializers.IntegerField(
        min_value=1,
        allow_null=True,
        help_text="While queued (its account at its limit of active runs): 1 for the next to start; else null.",
    )
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


class PlanStepSerializer(serializers.Serializer):
    id = serializers.ChoiceField(list(plan_.FULL_PLAN), help_text="The run step it becomes.")
    agent_id = serializers.ChoiceField(list(plan_.AGENTS))
    task = serializers.CharField()
    depends_on = serializers.ListField(child=serializers.ChoiceField(list(plan_.FULL_PLAN)))


class PlanSerializer(serializers.Serializer):
    """Read-only; documents a plan's shape for the schema."""

    id = serializers.CharField()
    session_id = serializers.CharField(help_text="The campaign's id.")
    goal = serializers.CharField()
    strategy = serializers.ChoiceField(Strategy.choices)
    steps = PlanStepSerializer(many=True)
    run_id = serializers.CharField(allow_null=True, help_text="The run it became; null until executed.")
    created_at = serializers.DateTimeField()


class PlanCreateSerializer(serializers.Serializer):
    goal = StrictCharField(max_length=GOAL_MAX_LENGTH)
    strategy = serializers.ChoiceField(Strategy.choices, default=Strategy.PARALLEL)
    agents = FlatListField(
        child=serializers.ChoiceField(list(plan_.AGENTS)),
        required=False,
        min_length=1,
        help_text="The agents the plan may use (default: all).",
    )


class AgentMessageSerializer(serializers.Serializer):
    agent = serializers.ChoiceField(list(plan_.AGENTS))
    content = StrictCharField(max_length=5000)


@extend_schema_field(
    {
        "type": "object",
        "description": "What the tool is asked: only `instructions` (a string).",
        "properties": {"instructions": {"type": "string", "maxLength": 5000}},
        "additionalProperties": False,
    }
)
class ToolParametersField(serializers.JSONField):
    """Checked by the service (orchestration.services.tool_execute), which every door shares."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be an object.")
        return data


class ToolCallSerializer(serializers.Serializer):
    tool_name = serializers.ChoiceField(list(plan_.TOOLS), help_text="Each agent has one tool; it names the agent.")
    parameters = ToolParametersField(required=False, default=dict)
    require_approval = StrictBooleanField(required=False, default=False)


class RevisionSerializer(serializers.Serializer):
    instructions = StrictCharField(max_length=5000)
