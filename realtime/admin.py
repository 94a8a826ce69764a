from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from realtime.models import SystemNotice
from realtime.services import notice_broadcast


@admin.register(SystemNotice)
class SystemNoticeAdmin(admin.ModelAdmin):
    """Adding a notice sends it to every connected client; "send again" repeats it."""

    list_display = ["sent_at", "level", "message", "sent_by"]
    list_filter = ["level", "sent_at"]
    search_fields = ["message"]
    fields = ["level", "message"]
    actions = ["send_again"]

    def has_change_permission(self, request: HttpRequest, obj: SystemNotice | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: SystemNotice, form: object, change: bool) -> None:
        from realtime.services import notice_send

        sent = notice_send(level=obj.level, message=obj.message, sent_by=request.user)
        obj.pk, obj.sent_at, obj.sent_by = sent.pk, sent.sent_at, sent.sent_by
        self.message_user(request, "Sent to every connected client.", messages.SUCCESS)

    @admin.action(description="Send the selected notices again")
    def send_again(self, request: HttpRequest, queryset: QuerySet[SystemNotice]) -> None:
        for notice in queryset:
            notice_broadcast(notice)
        self.message_user(request, f"Sent {len(queryset)} notice(s) again.", messages.SUCCESS)
