"""Queueing tasks after commit, so a worker never sees a row that is not committed yet.

A write that queues work first checks that the broker answers (``require_broker``), so that with
Redis down it is refused (503) before anything is stored. Should the broker go away between that
check and the commit, the rows are stored without their task message: the send failure is logged,
not raised, and the recovery task (``services.runs_recover``) queues the work again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerError

from campaigns.errors import Unavailable
from marketing_agents import redisconf
from marketing_agents.errors import REDIS_DOWN

logger = logging.getLogger(__name__)

_brokers: dict[str, redis.Redis] = {}


def require_broker() -> None:
    """Raise Unavailable unless the broker answers a PING within a second."""
    url = settings.CELERY_BROKER_URL
    if url not in _brokers:
        target = redisconf.broker_target(url, redisconf.current())
        _brokers[url] = redisconf.client(target, socket_connect_timeout=1, socket_timeout=1)
    try:
        _brokers[url].ping()
    except (redis.ConnectionError, redis.TimeoutError):
        logger.warning("broker unavailable: a write that queues work was refused")
        raise Unavailable(REDIS_DOWN) from None


def _send_after_commit(what: str, send: Callable[[], object]) -> None:
    def on_commit() -> None:
        try:
            send()
        except (BrokerError, redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning(
                "%s: the broker is unreachable (%s); the recovery task will queue it again", what, type(exc).__name__
            )

    transaction.on_commit(on_commit)


def begin_run(run_pk: int) -> None:
    from orchestration import tasks

    _send_after_commit(f"run {run_pk}", lambda: tasks.run_begin.delay(run_pk))


def execute_step(run_pk: int, step_name: str, *, countdown: float = 0) -> None:
    from orchestration import tasks

    _send_after_commit(
        f"run {run_pk} step {step_name}",
        lambda: tasks.step_execute.apply_async((run_pk, step_name), countdown=countdown or None),
    )
