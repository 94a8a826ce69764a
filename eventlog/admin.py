"""The event log in the admin: read-only, as it is append-only everywhere."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from eventlog.models import CampaignEvent, StreamEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """The event log is append-only: operators read it, nobody edits or deletes it here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(CampaignEvent)
class CampaignEventAdmin(ReadOnlyAdmin):
    """The event log is append-only: operators read it, nobody edits or deletes it here."""

    list_display = ["sequence", "event", "campaign", "run_public_id", "emitted_at"]
    list_filter = ["event", "emitted_at"]
    search_fields = ["campaign__public_id", "campaign__name", "run_public_id", "event"]
    list_select_related = ["campaign"]
    ordering = ["-emitted_at", "-sequence"]

    @staticmethod
    def run_events(campaign_pk: int, run_public_id: str, *, limit: int = 200) -> SafeString:
        """A run's events, the latest ``limit`` of them as a table, for the run's admin page."""
        events = CampaignEvent.objects.filter(campaign_id=campaign_pk, run_public_id=run_public_id)
        events = events.order_by("-sequence")[:limit]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            ((e.sequence, e.event, e.emitted_at, json.dumps(e.data)[:300]) for e in reversed(events)),
        )
        query = urlencode({"campaign": campaign_pk, "run_public_id": run_public_id})
        url = f"{reverse('admin:eventlog_campaignevent_changelist')}?{query}"
        return format_html(
            '<table><tr><th>Sequence</th><th>Event</th><th>Emitted</th><th>Data</th></tr>{}</table><a href="{}">{}</a>',
            rows,
            url,
            "Every event of this run in the log",
        )


@admin.register(StreamEvent)
class StreamEventAdmin(ReadOnlyAdmin):
    """The account and operations streams' events: read-only, like the campaigns'."""

    list_display = ["sequence", "event", "stream", "emitted_at"]
    list_filter = ["event", "stream__kind", "emitted_at"]
    search_fields = ["stream__user__username", "event"]
    list_select_related = ["stream__user"]
    ordering = ["-emitted_at", "-sequence"]
