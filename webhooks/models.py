"""Webhooks and their deliveries (PROTOCOL.md §12)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from campaigns import ids


def webhook_id() -> str:
    return ids.new_id("whk")


def delivery_id() -> str:
    return ids.new_id("dlv")


def message_id() -> str:
    return ids.new_id("msg")


class Webhook(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=webhook_id, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list, help_text="Event names (PROTOCOL.md §7 and §11).")
    description = models.CharField(max_length=500, blank=True)
    # The Standard Webhooks signing secret (whsec_…): shown once, kept to sign every delivery.
    secret = models.CharField(max_length=100, editable=False)
    active = models.BooleanField(default=True)
    # Held by the worker delivering this webhook's queue, so deliveries go out one at a time, in order.
    lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    lease_token = models.CharField(max_length=32, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.public_id  # never the URL: it often carries a token of the receiver's

    def clean(self) -> None:
        from webhooks.services import EVENTS  # the names live with the delivery code

        if not isinstance(self.events, list) or not all(isinstance(e, str) and e in EVENTS for e in self.events):
            raise ValidationError({"events": "A list of event names of PROTOCOL.md §7 and §11."})


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=delivery_id, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=64)
    # The Standard Webhooks message id (webhook-id header): the same on every attempt and on a
    # redelivery, so a receiver can drop a duplicate.
    message_id = models.CharField(max_length=32, default=message_id)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["webhook", "status", "id"])]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook_id} ({self.status})"
