"""The campaign's admin page, as a base: ``orchestration.admin`` registers it with the campaign's
runs, the start action and the delete rule (a campaign with an active run is cancelled first)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "public_id", "owner", "tone", "last_sequence", "created_at", "updated_at"]
    list_filter = ["created_at", "tone"]
    search_fields = ["public_id", "name", "brief", "audience", "owner__username"]
    readonly_fields = ["public_id", "last_sequence", "created_at", "updated_at"]
    raw_id_fields = ["owner"]
    date_hierarchy = "created_at"
