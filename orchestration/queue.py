"""Queueing tasks after commit, so a worker never sees a row that is not committed yet."""

from __future__ import annotations

from django.db import transaction


def begin_run(run_pk: int) -> None:
    from orchestration import tasks

    transaction.on_commit(lambda: tasks.run_begin.delay(run_pk))


def execute_step(run_pk: int, step_name: str, *, countdown: float = 0) -> None:
    from orchestration import tasks

    transaction.on_commit(lambda: tasks.step_execute.apply_async((run_pk, step_name), countdown=countdown or None))
