"""The event log in the admin: read-only, as it is append-only everywhere."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from campaigns.admin import ReadOnlyInline
from eventlog.models import CampaignEvent


class EventInline(ReadOnlyInline):
    """A run's events, for the run's admin page (orchestration.admin)."""

    model = CampaignEvent
    fk_name = "run"
    fields = ["sequence", "event", "emitted_at", "data"]
    readonly_fields = fields
    ordering = ["sequence"]


@admin.register(CampaignEvent)
class CampaignEventAdmin(admin.ModelAdmin):
    """The event log is append-only: operators read it, nobody edits or deletes it here."""

    list_display = ["sequence", "event", "campaign", "run", "emitted_at"]
    list_filter = ["event", "emitted_at"]
    search_fields = ["campaign__public_id", "campaign__name", "run__public_id", "event"]
    list_select_related = ["campaign", "run"]
    ordering = ["-emitted_at", "-sequence"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
