"""Reads of accounts: the month, the spend, what is left of the budget."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q
from django.utils import timezone

from accounts.models import Account, ApiKey, MonthlySpend

MONEY = Decimal("0.000001")
LAST_USED_PRECISION = timedelta(minutes=1)


def current_period(now: datetime | None = None) -> date:
    """The first day of the current calendar month, in UTC."""
    now = now or timezone.now()
    return now.astimezone(UTC).date().replace(day=1)


def period_label(period: date) -> str:
    return f"{period:%Y-%m}"


def money(value: Decimal | None) -> str | None:
    """Amounts on the wire: strings with six decimals (as a run's ``cost``), None for no amount."""
    return None if value is None else f"{Decimal(value).quantize(MONEY):f}"


def monthly_budget(user_id: int) -> Decimal | None:
    return Account.objects.filter(user_id=user_id).values_list("monthly_budget", flat=True).first()


def spend_this_month(user_id: int) -> Decimal:
    row = MonthlySpend.objects.filter(user_id=user_id, period=current_period()).values_list("spend", flat=True).first()
    return row if row is not None else Decimal(0)


def budget_left(user_id: int) -> Decimal | None:
    """What the user may still spend this month (never negative), or None without a budget."""
    budget = monthly_budget(user_id)
    if budget is None:
        return None
    return max(Decimal(0), budget - spend_this_month(user_id))


def budget_refusal(user_id: int) -> str:
    """Why a new run must be refused (the month's budget is spent), or ''."""
    budget = monthly_budget(user_id)
    if budget is None:
        return ""
    spent = spend_this_month(user_id)
    if spent < budget:
        return ""
    return (
        f"The monthly budget is spent (${money(spent)} of ${money(budget)} this month); "
        "raise monthly_budget on /api/account/ or wait for next month."
    )


# What the library generates: 8 letters or digits, a dot, then more (a JWT has three parts, two dots).
API_KEY_SHAPE = re.compile(r"[A-Za-z0-9]{8}\.[A-Za-z0-9]{1,64}")


def looks_like_api_key(credential: str) -> bool:
    """Shaped like an API key; anything else (a JWT, a NUL byte, garbage) never reaches the database."""
    return API_KEY_SHAPE.fullmatch(credential) is not None


def api_key_user(credential: str) -> tuple[Any, ApiKey] | None:
    """The owner of a valid, unrevoked key, and the key; None for anything else. The key is verified by
    the library (its SHA-512 hasher: fast enough for every request and every socket)."""
    try:
        key = ApiKey.objects.get_from_key(credential)
    except ApiKey.DoesNotExist:
        return None
    if key.has_expired or not key.user.is_active:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_PRECISION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)  # once a minute at most, not every request
    return key.user, key


def api_keys_revoked(key_ids: set[str]) -> set[str]:
    """Which of these keys can no longer be used (revoked, expired, deleted, or their owner inactive)."""
    usable = ApiKey.objects.filter(pk__in=key_ids, revoked=False, user__is_active=True).filter(
        Q(expiry_date__isnull=True) | Q(expiry_date__gt=timezone.now())
    )
    return key_ids - set(usable.values_list("pk", flat=True))
