"""Periodic upkeep of the event log."""

from __future__ import annotations

from celery import shared_task

from eventlog.services import events_prune


@shared_task(name="eventlog.tasks.events_prune", ignore_result=True)
def prune_events() -> int:
    return events_prune()
