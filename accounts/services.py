"""Writes of accounts: the budget, the spend roll-up with its alerts, and the account stream's events.

Usage is reported inside the run's transaction (orchestration), so the spend, the alerts and the
``spend.updated`` events commit or roll back with the usage that caused them. ``spend.updated`` is
published at most once a second per user: a report within a second of the last announcement only
queues the flush task (once), which announces the total then. Thresholds are kept on the month's row,
so each is alerted once however many runs cross it at once (they queue on the row's lock).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import BUDGET_THRESHOLDS, Account, ApiKey, MonthlySpend
from accounts.selectors import current_period, money, monthly_budget, period_label
from campaigns.errors import ServiceError
from eventlog.publisher import publish_to_stream
from eventlog.services import account_stream, ops_stream

logger = logging.getLogger(__name__)

SPEND_ANNOUNCE_SECONDS = 1.0
# A queued flush not done after this long (the broker lost it) is queued again by the next report.
FLUSH_STALE_SECONDS = 10.0


def account_publish(user_id: int, event: str, data: dict[str, Any]) -> None:
    """A durable event on the user's account stream, in the caller's transaction."""
    publish_to_stream(account_stream(user_id), event, data)


def config_changed(setting: str, by: str) -> None:
    """``config.changed`` on the operations stream: what was changed and by whom, never a value."""
    publish_to_stream(ops_stream(), "config.changed", {"setting": setting[:200], "by": by})


def account_get(user_id: int) -> Account:
    account, _ = Account.objects.get_or_create(user_id=user_id)
    return account


@transaction.atomic
def account_update(*, user_id: int, monthly_budget: Decimal | None) -> Account:
    account = Account.objects.select_for_update().filter(user_id=user_id).first() or account_get(user_id)
    account.monthly_budget = monthly_budget
    account.save(update_fields=["monthly_budget", "updated_at"])
    return account


def _locked_month(user_id: int) -> MonthlySpend:
    period = current_period()
    row = MonthlySpend.objects.select_for_update().filter(user_id=user_id, period=period).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            MonthlySpend.objects.create(user_id=user_id, period=period)
    except IntegrityError:  # another run's report made it first
        pass
    return MonthlySpend.objects.select_for_update().get(user_id=user_id, period=period)


def spend_record(*, user_id: int, cost: Decimal) -> None:
    """Add a run's usage to its owner's month; alert thresholds crossed; announce the spend (or queue it)."""
    if cost <= 0:
        return
    with transaction.atomic():
        row = _locked_month(user_id)
        row.spend += cost
        budget = monthly_budget(user_id)
        if budget is not None:
            for threshold in BUDGET_THRESHOLDS:
                if threshold > row.alerted_threshold and row.spend * 100 >= budget * threshold:
                    row.alerted_threshold = threshold
                    account_publish(
                        user_id,
                        "budget.alert",
                        {
                            "period": period_label(row.period),
                            "spend": money(row.spend),
                            "budget": money(budget),
                            "threshold": threshold,
                        },
                    )
        now = timezone.now()
        if row.announced_at is None or now - row.announced_at >= timedelta(seconds=SPEND_ANNOUNCE_SECONDS):
            _announce(row, budget, now)
        elif row.flush_queued_at is None or now - row.flush_queued_at >= timedelta(seconds=FLUSH_STALE_SECONDS):
            row.flush_queued_at = now
            delay = (row.announced_at + timedelta(seconds=SPEND_ANNOUNCE_SECONDS) - now).total_seconds()
            pk = row.pk
            transaction.on_commit(lambda: _queue_flush(pk, delay))
        row.save()


def _announce(row: MonthlySpend, budget: Decimal | None, now: Any) -> None:
    account_publish(
        row.user_id,
        "spend.updated",
        {
            "period": period_label(row.period),
            "spend": money(row.spend),
            "previous_spend": money(row.announced_spend),
            "delta": money(row.spend - row.announced_spend),
            "budget": money(budget),
        },
    )
    row.announced_spend, row.announced_at = row.spend, now


def _queue_flush(spend_pk: int, delay: float) -> None:
    from accounts.tasks import flush_spend

    try:
        flush_spend.apply_async((spend_pk,), countdown=max(0.0, delay))
    except Exception as exc:  # the next report queues it again (FLUSH_STALE_SECONDS)
        logger.warning("queueing the spend flush failed: %s", type(exc).__name__)


@transaction.atomic
def spend_flush(spend_pk: int) -> bool:
    """Announce what was reported since the last ``spend.updated`` (the flush task); True if it did."""
    row = MonthlySpend.objects.select_for_update().filter(pk=spend_pk).first()
    if row is None:
        return False
    now = timezone.now()
    row.flush_queued_at = None
    announced = False
    if row.spend != row.announced_spend:
        if row.announced_at is not None and now - row.announced_at < timedelta(seconds=SPEND_ANNOUNCE_SECONDS):
            # Early (a clock step, an eager broker): queue it again for the rest of the second.
            row.flush_queued_at = now
            delay = (row.announced_at + timedelta(seconds=SPEND_ANNOUNCE_SECONDS) - now).total_seconds()
            transaction.on_commit(lambda: _queue_flush(spend_pk, delay))
        else:
            _announce(row, monthly_budget(row.user_id), now)
            announced = True
    row.save()
    return announced


API_KEY_NAME_MAX_LENGTH = 50


def api_key_create(*, user_id: int, name: str) -> tuple[ApiKey, str]:
    """A new key for the user; the key itself is returned once and only its hash is kept."""
    name = name.strip()
    if not name:
        raise ServiceError("name must not be blank.")
    return ApiKey.objects.create_key(user_id=user_id, name=name[:API_KEY_NAME_MAX_LENGTH])


def api_key_revoke(key: ApiKey) -> None:
    """Revoked for good (the library refuses to undo it); sockets opened with it close within seconds."""
    key.revoked = True
    key.save(update_fields=["revoked"])


def spend_flush_pending() -> int:
    """Announce every total of this month still unannounced a second after its last announcement
    (its flush task was lost); returns how many were announced."""
    due = timezone.now() - timedelta(seconds=SPEND_ANNOUNCE_SECONDS)
    rows = MonthlySpend.objects.filter(period=current_period(), announced_at__lte=due).exclude(
        spend=F("announced_spend")
    )
    return sum(spend_flush(pk) for pk in rows.values_list("pk", flat=True))
