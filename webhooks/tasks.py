"""Celery tasks of webhooks."""

from __future__ import annotations

from celery import shared_task

from webhooks.services import deliver_due as _deliver_due
from webhooks.services import webhook_deliver


@shared_task(name="webhooks.tasks.deliver", ignore_result=True)
def deliver(webhook_pk: int) -> int:
    return webhook_deliver(webhook_pk)


@shared_task(name="webhooks.tasks.deliver_due", ignore_result=True)
def deliver_due() -> int:
    return _deliver_due()
