from __future__ import annotations

import time

import pytest

from eventlog.models import CampaignEvent
from marketing_agents.tests.processes import Worker
from orchestration.models import FINISHED_STATES, OrchestrationRun


@pytest.fixture
def worker(start_worker) -> Worker:
    return start_worker()


def wait_for_run(run: OrchestrationRun, states=FINISHED_STATES, timeout: float = 90) -> OrchestrationRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.state in states:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run still {run.state} after {timeout} s")


def events_of(campaign) -> list[CampaignEvent]:
    return list(CampaignEvent.objects.filter(campaign=campaign).order_by("sequence"))


def names(events) -> list[str]:
    return [event.event for event in events]
