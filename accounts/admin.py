"""Accounts in the admin: operators set budgets, read the monthly spend (written by runs alone) and
make or revoke users' API keys."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from accounts.models import Account, ApiKey, MonthlySpend
from accounts.services import api_key_revoke, config_changed

# The library's own key model is unused (ours has an owner): one "API keys" page, not two.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


class ConfigChangesAdmin(admin.ModelAdmin):
    """Operators' changes are announced on the operations stream (``config.changed``): which object and
    which fields, by whom; never the values (a key, a secret, a budget are nobody else's business)."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        fields = ", ".join(form.changed_data) if change and form.changed_data else ""
        what = f"{obj._meta.verbose_name} {obj}" + (f": {fields}" if fields else " added" if not change else "")
        config_changed(what, request.user.get_username())

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        what = f"{obj._meta.verbose_name} {obj} deleted"
        super().delete_model(request, obj)
        config_changed(what, request.user.get_username())


@admin.register(Account)
class AccountAdmin(ConfigChangesAdmin):
    list_display = ["user", "monthly_budget", "updated_at"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]


@admin.register(MonthlySpend)
class MonthlySpendAdmin(admin.ModelAdmin):
    """Spend is what runs reported: read-only here."""

    list_display = ["user", "period", "spend", "alerted_threshold", "announced_at"]
    list_filter = ["period"]
    search_fields = ["user__username"]
    list_select_related = ["user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(ConfigChangesAdmin, APIKeyModelAdmin):
    """The library's admin (a new key is shown once, in a message; a revoked key stays revoked), with
    its owner and a bulk revoke."""

    list_display = ["public_id", "name", "user", "prefix", "created", "last_used_at", "revoked"]
    list_filter = ["revoked", "created"]
    search_fields = ["name", "prefix", "public_id", "user__username"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        return (*super().get_readonly_fields(request, obj), "public_id", "last_used_at")

    @admin.action(description="Revoke the selected keys (their sockets close within seconds)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        keys = list(queryset.filter(revoked=False))
        for key in keys:
            api_key_revoke(key)
            config_changed(f"API key {key} revoked", request.user.get_username())
        self.message_user(request, f"Revoked {len(keys)} key(s).")
