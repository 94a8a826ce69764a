"""Provider health: each provider's recent outcomes, shared by every worker through its row, and the
status they add up to. A change of status is published as ``provider.health_changed`` on the
operations stream (PROTOCOL.md §11); a rate-limit answer raises a ``system.alert`` there, at most
once a minute per provider.

The rule, over the last OUTCOMES_KEPT outcomes of the last WINDOW: the last DOWN_AFTER all failed:
``down``; at least DEGRADED_AFTER failed: ``degraded``; otherwise ``healthy``. So a provider comes
back through ``degraded`` and is ``healthy`` again once its failures leave the window.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from eventlog.publisher import publish_to_stream
from eventlog.services import ops_stream
from orchestration.models import ProviderHealth, ProviderStatus

logger = logging.getLogger(__name__)

OK, ERROR, TIMEOUT, RATE_LIMITED = "ok", "error", "timeout", "rate_limited"
OUTCOMES_KEPT = 10
WINDOW_SECONDS = 300
DOWN_AFTER = 3
DEGRADED_AFTER = 2
RATE_LIMIT_ALERT_EVERY = timedelta(minutes=1)

MESSAGES = {
    ProviderStatus.HEALTHY: "Answering normally.",
    ProviderStatus.DEGRADED: "Some recent requests failed ({failed} of the last {seen}).",
    ProviderStatus.DOWN: "The last {down} requests failed; runs are retrying.",
}


def status_of(outcomes: list[list]) -> tuple[str, str]:
    kinds = [kind for _, kind in outcomes]
    failed = sum(kind != OK for kind in kinds)
    if len(kinds) >= DOWN_AFTER and all(kind != OK for kind in kinds[-DOWN_AFTER:]):
        status = ProviderStatus.DOWN
    elif failed >= DEGRADED_AFTER:
        status = ProviderStatus.DEGRADED
    else:
        status = ProviderStatus.HEALTHY
    return status, MESSAGES[status].format(failed=failed, seen=len(kinds), down=DOWN_AFTER)


def _locked(provider: str) -> ProviderHealth:
    row = ProviderHealth.objects.select_for_update().filter(provider=provider).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            ProviderHealth.objects.create(provider=provider)
    except IntegrityError:  # another worker made it first
        pass
    return ProviderHealth.objects.select_for_update().get(provider=provider)


def record_outcome(provider: str, kind: str) -> str:
    """Count one outcome of a provider call; returns the provider's status. Never raises: health is a
    report, and a step's outcome must not depend on it."""
    try:
        with transaction.atomic():
            row = _locked(provider)
            now = time.time()
            row.outcomes = [o for o in row.outcomes if now - o[0] < WINDOW_SECONDS][-(OUTCOMES_KEPT - 1) :] + [
                [now, kind]
            ]
            status, message = status_of(row.outcomes)
            if status != row.status:
                previous, row.status, row.message, row.changed_at = row.status, status, message, timezone.now()
                publish_to_stream(
                    ops_stream(),
                    "provider.health_changed",
                    {"provider": provider, "status": status, "previous_status": previous, "message": message},
                )
            if kind == RATE_LIMITED and (
                row.rate_limited_alert_at is None
                or timezone.now() - row.rate_limited_alert_at >= RATE_LIMIT_ALERT_EVERY
            ):
                row.rate_limited_alert_at = timezone.now()
                publish_to_stream(
                    ops_stream(),
                    "system.alert",
                    {
                        "level": "warning",
                        "message": f"The {provider} provider is rate limiting requests (HTTP 429); steps are retrying.",
                        "source": f"provider:{provider}",
                    },
                )
            row.save()
            return row.status
    except Exception as exc:  # the database is away: the step's own outcome is what matters
        logger.warning("recording %s's health failed: %s", provider, type(exc).__name__)
        return ""


def providers_health() -> list[ProviderHealth]:
    return list(ProviderHealth.objects.order_by("provider"))
