from __future__ import annotations

from typing import Any

from django.db import models
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from campaigns.models import Artifact, Campaign
from campaigns.payloads import artifact_payload


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of quietly turning them into text.

    ``max_length`` counts the characters sent, before surrounding whitespace is trimmed, so a text
    is refused exactly when the schema's ``maxLength`` says so."""

    default_error_messages = {"invalid": "Not a valid string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


@extend_schema_field(OpenApiTypes.OBJECT, component_name="CampaignSettings")
class SettingsField(serializers.JSONField):
    """Campaign or run settings: a JSON object (the schema lists its keys: marketing_agents/schema.py)."""


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
