"""The recovery task requeues what a dead worker or a lost message left behind, and nothing else."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from campaigns.tests.factories import RunFactory
from orchestration import services
from orchestration.execution import backoff_seconds
from orchestration.models import OrchestrationRun, RunState, RunStep

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker():
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete("celery")
    yield lambda: client.llen("celery")
    client.delete("celery")
    client.close()


def test_a_step_whose_lease_expired_is_requeued_once(broker):
    run = RunFactory(state=RunState.GENERATING, steps={"Copy": "running"})
    RunStep.objects.filter(run=run, name="Copy").update(
        lease_expires_at=timezone.now() - timedelta(seconds=1), attempt=1
    )
    assert services.runs_recover() == 1
    step = run.steps.get(name="Copy")
    assert step.status == "queued"
    assert broker() == 1
    assert services.runs_recover() == 0, "requeued steps are not requeued again at once"
    thoughts = [e.data["thought"] for e in run.campaign.events.filter(event="agent.thought")]
    assert any("stopped responding" in thought for thought in thoughts)


def test_a_step_with_a_live_lease_is_left_alone(broker):
    run = RunFactory(state=RunState.GENERATING, steps={"Copy": "running"})
    RunStep.objects.filter(run=run, name="Copy").update(lease_expires_at=timezone.now() + timedelta(seconds=30))
    assert services.runs_recover() == 0
    assert run.steps.get(name="Copy").status == "running"
    assert broker() == 0


def test_a_queued_step_nobody_picked_up_is_queued_again(broker, settings):
    run = RunFactory(state=RunState.GENERATING, steps={"Copy": "queued"})
    old = timezone.now() - timedelta(seconds=settings.RUN_REQUEUE_AFTER_SECONDS + 5)
    RunStep.objects.filter(run=run, name="Copy").update(queued_at=old)
    assert services.runs_recover() == 1
    assert run.steps.get(name="Copy").queued_at > old
    assert broker() == 1


def test_steps_of_finished_runs_are_never_requeued(broker):
    run = RunFactory(state=RunState.CANCELLED, steps={"Copy": "running"})
    RunStep.objects.filter(run=run).update(lease_expires_at=timezone.now() - timedelta(minutes=5))
    assert services.runs_recover() == 0
    assert broker() == 0


def test_a_pending_run_whose_begin_was_lost_is_begun_again(broker, settings):
    run = RunFactory(state=RunState.PENDING)
    old = timezone.now() - timedelta(seconds=settings.RUN_REQUEUE_AFTER_SECONDS + 5)
    OrchestrationRun.objects.filter(pk=run.pk).update(updated_at=old)
    assert services.runs_recover() == 1
    assert broker() == 1


def test_backoff_grows_and_is_bounded(settings):
    settings.AGENT_RETRY_BASE_MS, settings.AGENT_RETRY_MAX_MS = 1000, 8000
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [backoff_seconds(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1, "jittered"
