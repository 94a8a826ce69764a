"""REST views of webhooks (PROTOCOL.md §12): the caller's webhooks, their deliveries, a test send."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.api.fields import StrictCharField
from webhooks import services
from webhooks.models import Webhook, WebhookDelivery


class WebhookSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    url = serializers.URLField(max_length=2000)
    events = serializers.ListField(
        child=StrictCharField(max_length=64), allow_empty=False, max_length=len(services.EVENTS)
    )
    description = StrictCharField(max_length=500, required=False, allow_blank=True)

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
