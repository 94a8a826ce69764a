"""REST views of webhooks (PROTOCOL.md §12): the caller's webhooks, their deliveries, a test send."""

from __future__ import annotations

import re
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.api.fields import StrictBooleanField, StrictCharField
from webhooks import services
from webhooks.models import Webhook, WebhookDelivery


@extend_schema_field({"type": "array", "items": {"type": "string", "enum": list(services.EVENTS)}, "minItems": 1})
class EventsField(serializers.Field):
    """A list of event names; its errors are one flat list of messages (as every other field's)."""

    def to_internal_value(self, data: Any) -> list[str]:
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError("events must be a non-empty list of event names.")
        if not all(isinstance(name, str) for name in data):
            raise serializers.ValidationError("Every event name must be a string.")
        unknown = sorted({name for name in data if name not in services.EVENTS})
        if unknown:
            names = ", ".join(repr(name[:64]) for name in unknown[:5])
            raise serializers.ValidationError(f"Unknown events: {names}; see PROTOCOL.md §7 and §11.")
        return sorted(set(data))

    def to_representation(self, value: list[str]) -> list[str]:
        return list(value)


# Exactly what is accepted, and what the schema says: http(s), a host name of up to four labels (or
# an IPv4 address), a port, a path of printable characters. The SSRF check decides the rest.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
URL_PATTERN = (
    rf"^https?://(?:(?:{_LABEL}\.){{1,3}}[A-Za-z]{{2,24}}|localhost|(?:{_OCTET}\.){{3}}{_OCTET})"
    rf"(?::{_PORT})?(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{{2}}){{0,1000}})?$"
)


@extend_schema_field({"type": "string", "format": "uri", "maxLength": 2000, "pattern": URL_PATTERN})
class WebhookUrlField(StrictCharField):
    default_error_messages = {
        "invalid_url": "Enter an http:// or https:// URL with a host name (or an IPv4 address), e.g. https://example.com/hooks."
    }

    def to_internal_value(self, data: Any) -> str:
        url = super().to_internal_value(data)
        if not re.match(URL_PATTERN, url):
            self.fail("invalid_url")
        return url


class WebhookSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    url = WebhookUrlField(max_length=2000)
    events = EventsField()
    description = StrictCharField(max_length=500, required=False, allow_blank=True)
    active = StrictBooleanField(required=False)

    class Meta:
        model = Webhook
        fields = ["id", "url", "events", "description", "active", "created_at"]
        read_only_fields = ["created_at"]


class NewWebhookSerializer(WebhookSerializer):
    secret = serializers.CharField(read_only=True, help_text="Standard Webhooks signing secret; shown only here.")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]


class DeliverySerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "status",
            "attempts",
            "status_code",
            "last_error",
            "next_attempt_at",
            "created_at",
            "delivered_at",
        ]


def owned_webhook(request: Request, webhook_id: str) -> Webhook:
    webhook = Webhook.objects.filter(user=request.user, public_id=webhook_id).first()
    if webhook is None:
        raise NotFound("Webhook not found.")
    return webhook


class WebhookList(generics.ListCreateAPIView):
    """``GET``: the caller's webhooks. ``POST {"url","events","description"}``: a new webhook; the
    answer carries its signing ``secret``, shown only this once."""

    serializer_class = WebhookSerializer

    def get_queryset(self) -> QuerySet[Webhook]:
        return Webhook.objects.filter(user=self.request.user).order_by("-created_at", "-id")

    @extend_schema(request=WebhookSerializer, responses={201: NewWebhookSerializer})
    def post(self, request: Request) -> Response:
        serializer = WebhookSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = serializer.validated_data
        webhook = services.webhook_create(
            user_id=request.user.pk, url=data["url"], events=data["events"], description=data.get("description", "")
        )
        return Response(NewWebhookSerializer(webhook).data, status=status.HTTP_201_CREATED)


class WebhookDetail(APIView):
    @extend_schema(responses=WebhookSerializer)
    def get(self, request: Request, webhook_id: str) -> Response:
        return Response(WebhookSerializer(owned_webhook(request, webhook_id)).data)

    @extend_schema(request=WebhookSerializer, responses=WebhookSerializer)
    def patch(self, request: Request, webhook_id: str) -> Response:
        webhook = owned_webhook(request, webhook_id)
        serializer = WebhookSerializer(webhook, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        if serializer.validated_data:
            services.webhook_update(webhook, **serializer.validated_data)
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, webhook_id: str) -> Response:
        owned_webhook(request, webhook_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveryList(generics.ListAPIView):
    """The webhook's deliveries, newest first."""

    serializer_class = DeliverySerializer

    def get_queryset(self) -> QuerySet[WebhookDelivery]:
        webhook = owned_webhook(self.request, self.kwargs["webhook_id"])
        return WebhookDelivery.objects.filter(webhook=webhook).order_by("-id")


class WebhookTest(APIView):
    @extend_schema(
        request=None, responses={202: inline_serializer("WebhookTestQueued", {"delivery_id": serializers.CharField()})}
    )
    def post(self, request: Request, webhook_id: str) -> Response:
        delivery = services.webhook_test(owned_webhook(request, webhook_id))
        return Response({"delivery_id": delivery.public_id}, status=status.HTTP_202_ACCEPTED)
