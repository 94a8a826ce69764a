"""Full runs on the real stack: a Celery worker, Redis and PostgreSQL."""

from __future__ import annotations

import pytest

from campaigns.models import Artifact, ComplianceAudit, RunState
from campaigns.tests.factories import CampaignFactory, UserFactory
from orchestration import services
from orchestration.tests.conftest import events_of, names, wait_for_run

pytestmark = pytest.mark.e2e


def start(campaign, **settings):
    return services.run_start(campaign=campaign, created_by=campaign.owner, settings=settings)


def test_a_full_run_publishes_a_contiguous_log_ending_in_campaign_completed(worker):
    campaign = CampaignFactory(owner=UserFactory(username="alice"))
    run = wait_for_run(start(campaign))
    assert run.state == RunState.COMPLETED, worker.log()[-3000:]
    events = events_of(campaign)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].event == "campaign.completed"
    assert events[-1].data == {"run_id": run.public_id}
    assert names(events)[:3] == ["orchestration.state_changed", "orchestration.state_changed", "campaign.started"]
    generated = [e.data["artifact"]["type"] for e in events if e.event == "artifact.generated"]
    assert generated[0] == "Copy" and sorted(generated[1:]) == ["ShortCopy", "Visual"]
    assert sorted(Artifact.objects.filter(run=run).values_list("type", flat=True)) == ["Copy", "ShortCopy", "Visual"]
    audit = ComplianceAudit.objects.get(run=run)
    assert names(events).index("compliance.completed") < names(events).index("campaign.completed")
    assert 0 <= audit.score <= 100
    progress = [e.data["percentage"] for e in events if e.event == "progress"]
    assert progress == sorted(progress) and progress[-1] == 100
    print(f"events per run: {len(events)}; names: {names(events)}")
