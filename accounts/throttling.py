"""REST rate limits per user, or per API key (each key its own budget): DRF's throttling hook, with
the count kept in Redis so that every web process shares it (DRF's own throttles count in the
process's cache). ``API_RATE_PER_MINUTE`` requests in each minute (0: no limit);
``API_STAFF_RATE_PER_MINUTE`` for staff (0, the default: staff are not limited). Over the limit: 429
with ``Retry-After`` (the seconds left in the minute) and DRF's ``detail``. If Redis cannot be
reached the request goes through: a limit is not worth an outage. Logins have their own lockout
(accounts/lockout.py)."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle

from accounts.models import ApiKey
from marketing_agents import redisconf

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
_clients: dict[redisconf.RedisTarget, redis.Redis] = {}


def _client() -> redis.Redis:
    target = redisconf.current()
    if target not in _clients:
        _clients[target] = redisconf.client(target, socket_connect_timeout=1, socket_timeout=1)
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
        who = f"key:{request.auth.pk}" if isinstance(request.auth, ApiKey) else f"user:{user.pk}"
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        counter = f"throttle:{who}:{window}"
        try:
            pipeline = _client().pipeline()
            pipeline.incr(counter)
            pipeline.expire(counter, 2 * WINDOW_SECONDS)
            count = pipeline.execute()[0]
        except redis.RedisError as exc:
            logger.warning("rate limit not counted (%s): the request goes through", type(exc).__name__)
            return True
        if count <= limit:
            return True
        self.seconds_left = (window + 1) * WINDOW_SECONDS - now
        return False

    def wait(self) -> float | None:
        return self.seconds_left
