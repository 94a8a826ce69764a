"""Webhooks in the admin: operators read every delivery log and send a delivery again."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.admin import ConfigChangesAdmin
from webhooks.models import Webhook, WebhookDelivery
from webhooks.services import redeliver


@admin.register(Webhook)
class WebhookAdmin(ConfigChangesAdmin):
    list_display = ["public_id", "url", "user", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["public_id", "url", "user__username"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    readonly_fields = ["public_id", "created_at"]
    exclude = ["secret", "lease_until"]  # the signing secret is never shown again

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # made through the API, which shows the owner its secret once


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "public_id",
        "event",
        "webhook",
        "status",
        "attempts",
        "status_code",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["status", "event"]
    search_fields = ["public_id", "message_id", "webhook__public_id", "webhook__url"]
    list_select_related = ["webhook"]
    actions = ["send_again"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Deliver the selected again (at the end of each webhook's queue)")
    def send_again(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        deliveries = list(queryset.select_related("webhook"))
        for delivery in deliveries:
            redeliver(delivery)
        self.message_user(request, f"Queued {len(deliveries)} delivery(ies) again.")
