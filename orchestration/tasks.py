"""Celery tasks: thin wrappers that take ids and call a service."""

from __future__ import annotations

import logging
import os

from celery import shared_task
from django.core.exceptions import ObjectDoesNotExist
from django.db import InterfaceError, OperationalError, connection

from orchestration import execution, services

logger = logging.getLogger(__name__)


@shared_task(name="orchestration.tasks.run_begin", ignore_result=True)
def run_begin(run_pk: int) -> None:
    try:
        services.run_begin(run_pk=run_pk)
    except ObjectDoesNotExist:
        logger.info("run %s no longer exists; nothing to begin", run_pk)


@shared_task(bind=True, name="orchestration.tasks.step_execute", ignore_result=True)
def step_execute(self, run_pk: int, step_name: str) -> None:
    worker = f"{self.request.hostname}:{os.getpid()}"
    try:
        execution.step_execute(run_pk=run_pk, step_name=step_name, worker=worker)
    except ObjectDoesNotExist:
        logger.info("run %s no longer exists; step %s dropped", run_pk, step_name)


@shared_task(name="orchestration.tasks.runs_recover", ignore_result=True)
def runs_recover() -> int:
    try:
        return services.runs_recover()
    except (OperationalError, InterfaceError) as exc:  # the database is down: the next beat tries again
        logger.warning("recovery skipped: the database is unavailable (%s)", type(exc).__name__)
        connection.close()
        return 0
