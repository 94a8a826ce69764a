"""Error pages: JSON under /api/ (DRF's ``{"detail": …}`` shape), plain pages elsewhere.

An outage of the database or of Redis is not a bug: a request that meets one is answered 503 with
``Retry-After`` and a warning is logged, without a traceback (PROTOCOL.md §9).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger("marketing_agents.outage")

RETRY_AFTER_SECONDS = 5
DATABASE_DOWN = "The database is unavailable right now; nothing was changed. Try again in a few seconds."
REDIS_DOWN = "The message broker is unavailable right now; nothing was changed. Try again in a few seconds."


def unavailable_detail(exc: BaseException) -> str | None:
    """The 503 message for an outage, or None for any other error."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.warning("database unavailable: %s", type(exc).__name__)
        return DATABASE_DOWN
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, BrokerError)):
        logger.warning("redis unavailable: %s", type(exc).__name__)
        return REDIS_DOWN
    return None


class OutageMiddleware:
    """503 instead of 500 for the views outside DRF (pages, admin, probes) when a backend is down."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        detail = unavailable_detail(exception)
        if detail is None:
            return None
        if _wants_json(request):
            response: HttpResponse = JsonResponse({"detail": detail}, status=503)
        else:
            response = HttpResponse(detail, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/hubs/"))


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's own 400s (a Host not in ALLOWED_HOSTS, a malformed body read outside DRF)."""
    if _wants_json(request):
        return JsonResponse({"detail": "The request was malformed."}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "You do not have permission to perform this action."}, status=403)
    return defaults.permission_denied(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Internal server error."}, status=500)
    return defaults.server_error(request)
