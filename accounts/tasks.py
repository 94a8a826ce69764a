"""Celery tasks of accounts."""

from __future__ import annotations

from celery import shared_task

from accounts.services import spend_flush, spend_flush_pending


@shared_task(name="accounts.tasks.flush_spend", ignore_result=True)
def flush_spend(spend_pk: int) -> bool:
    return spend_flush(spend_pk)


@shared_task(name="accounts.tasks.flush_pending_spend", ignore_result=True)
def flush_pending_spend() -> int:
    return spend_flush_pending()
