"""Serializer fields the whole REST API shares (strict text and booleans, settings objects)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


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


class StrictBooleanField(serializers.BooleanField):
    """A BooleanField that takes JSON true and false only (not 0, 1, "yes" or "true")."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


@extend_schema_field(OpenApiTypes.OBJECT, component_name="CampaignSettings")
class SettingsField(serializers.JSONField):
    """Campaign or run settings: a JSON object (the schema lists its keys: marketing_agents/schema.py)."""


class FlatListField(serializers.ListField):
    """A ListField whose item errors are a flat list of messages (``["Item 1: …"]``), the one error
    shape of the API (DRF's own is an object keyed by index)."""

    def run_child_validation(self, data: list[Any]) -> list[Any]:
        try:
            return super().run_child_validation(data)
        except serializers.ValidationError as exc:
            detail = exc.detail if isinstance(exc.detail, dict) else {0: exc.detail}
            raise serializers.ValidationError(
                [
                    f"Item {index}: {' '.join(str(message) for message in messages)}"
                    for index, messages in detail.items()
                ]
            ) from None
