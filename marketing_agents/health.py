"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from marketing_agents import redisconf

logger = logging.getLogger(__name__)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception as exc:
        logger.warning("readiness: database unavailable (%s)", type(exc).__name__)
        return False


def _redis_ok(target: redisconf.RedisTarget, what: str) -> bool:
    client = redisconf.client(target, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except Exception as exc:
        logger.warning("readiness: %s unavailable (%s)", what, type(exc).__name__)
        return False
    finally:
        client.close()


def _layer_target() -> redisconf.RedisTarget:
    """The Redis the realtime channel layer (events to the web processes) uses."""
    return redisconf.from_layer_host(settings.CHANNEL_LAYERS["realtime"]["CONFIG"]["hosts"][0])


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready when the database, the shared Redis, the channel layer and the Celery broker all answer.

    ``redis`` is REDIS_URL (shared counters, presence); ``layer`` and ``broker`` are what the layer
    and Celery are configured with, the same Redis unless a deployment splits them."""
    checks = {
        "database": _database_ok(),
        "redis": _redis_ok(redisconf.current(), "redis"),
        "layer": _redis_ok(_layer_target(), "channel layer"),
        "broker": _redis_ok(redisconf.broker_target(settings.CELERY_BROKER_URL, redisconf.current()), "broker"),
    }
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": {k: "ok" if v else "down" for k, v in checks.items()}}
    return JsonResponse(body, status=200 if ready else 503)
