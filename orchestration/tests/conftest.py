from __future__ import annotations

import time

import pytest

from campaigns.models import Campaign
from campaigns.tests.api import alices_campaign
from campaigns.tests.factories import RunFactory
from eventlog.models import CampaignEvent
from marketing_agents.tests.processes import Worker
from orchestration.models import FINISHED_STATES, Approval, OrchestrationRun, RunState
from orchestration.tests.api import GENERATED


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


@pytest.fixture
def campaign(alice) -> Campaign:
    return alices_campaign(alice)


@pytest.fixture
def awaiting(campaign) -> tuple[OrchestrationRun, Approval]:
    """A run whose artifacts are generated and which waits for a person to approve them."""
    run = RunFactory(campaign=campaign, state=RunState.AWAITING_APPROVAL, steps=dict(GENERATED))
    approval = run.approvals.create(step="generation", reason="Review the generated artifacts before the audit.")
    return run, approval
