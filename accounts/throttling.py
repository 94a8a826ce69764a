"""REST rate limits per user (API keys count against their owner's budget): DRF's throttling hook, with
the count kept in Redis so that every web process shares it (DRF's own throttles count in the
process's cache). ``API_RATE_PER_MINUTE`` requests in each minute (0: no limit);
``API_STAFF_RATE_PER_MINUTE`` for staff (0, the default: staff are not limited). Over the limit: 429
with ``Retry-After`` (the seconds left in the minute) and DRF's ``detail``. If Redis cannot be
reached the request goes through, and so do the next ones for 30 s (without trying it): a limit is
not worth an outage. Logins have their own lockout
(accounts/lockout.py)."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry
from rest_framework.throttling import BaseThrottle

from marketing_agents import redisconf

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# After Redis failed, requests go uncounted this long without trying it (each try could cost a timeout).
PAUSE_AFTER_ERROR_SECONDS = 30
_clients: dict[redisconf.RedisTarget, redis.Redis] = {}
_paused_until = 0.0


def _client() -> redis.Redis:
    target = redisconf.current()
    if target not in _clients:
        # One quick try: redis-py's default retries would hold the request for seconds.
        _clients[target] = redisconf.client(
            target, socket_connect_timeout=0.25, socket_timeout=0.25, retry=Retry(NoBackoff(), 0)
        )
    return _clients[target]


class PerUserRateThrottle(BaseThrottle):
    """Fixed one-minute windows, one counter per user (or API key) and window: one INCR a request."""

    def __init__(self) -> None:
        self.seconds_left: float | None = None

    def allow_request(self, request: Any, view: Any) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            return True  # only the views anyone may call: the login has its own lockout
        limit = settings.API_STAFF_RATE_PER_MINUTE if user.is_staff else settings.API_RATE_PER_MINUTE
        if not limit:
            return True
        global _paused_until
        now = time.time()
        if now < _paused_until:
            return True
        window = int(now // WINDOW_SECONDS)
        counter = f"throttle:user:{user.pk}:{window}"  # API keys count against their owner's budget
        try:
            pipeline = _client().pipeline()
            pipeline.incr(counter)
            pipeline.expire(counter, 2 * WINDOW_SECONDS)
            count = pipeline.execute()[0]
        except redis.RedisError as exc:
            _paused_until = now + PAUSE_AFTER_ERROR_SECONDS
            logger.warning(
                "rate limit not counted (%s): requests go through for %d s",
                type(exc).__name__,
                PAUSE_AFTER_ERROR_SECONDS,
            )
            return True
        if count <= limit:
            return True
        self.seconds_left = (window + 1) * WINDOW_SECONDS - now
        return False

    def wait(self) -> float | None:
        return self.seconds_left
