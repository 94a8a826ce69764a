"""Accounts in the admin: operators set budgets and read the monthly spend (written by runs alone)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from accounts.models import Account, MonthlySpend


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
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
