"""Fair shares on the real stack (PostgreSQL, Redis, Celery workers with more processes than the
limit): one account starts 20 runs with a limit of 3, and another account starts one meanwhile."""

from __future__ import annotations

import time

import pytest

from campaigns.tests.factories import CampaignFactory, UserFactory
from eventlog.models import CampaignEvent
from orchestration import services
from orchestration.models import FINISHED_STATES, OrchestrationRun, RunState
from orchestration.tests.conftest import wait_for_run

pytestmark = pytest.mark.e2e

LIMIT = 3
RUNS = 20


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant (an end at the same instant as a start
    closes first: a share freed and given in one transaction)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = most = 0
    for _, change in edges:
        open_now += change
        most = max(most, open_now)
    return most


def active_intervals(runs: list[OrchestrationRun]) -> list[tuple[float, float]]:
    """Each run's time holding a share, from its log: from the state change that made it active (its
    creation as ``pending``, or ``queued`` → ``pending``) to the one that finished it."""
    intervals = []
    for run in runs:
        changes = CampaignEvent.objects.filter(
            run_public_id=run.public_id, event="orchestration.state_changed"
        ).order_by("sequence")
        began = ended = None
        for change in changes:
            state, at = change.data["state"], change.emitted_at.timestamp()
            if began is None and state not in (RunState.QUEUED, *FINISHED_STATES):
                began = at
            if state in FINISHED_STATES:
                ended = at
        assert began is not None and ended is not None, [c.data for c in changes]
        intervals.append((began, ended))
    return intervals


def promoted_at(run: OrchestrationRun) -> float:
    """When a queued run got its share (its ``queued`` → ``pending`` change)."""
    change = CampaignEvent.objects.get(
        run_public_id=run.public_id, event="orchestration.state_changed", data__previous_state=RunState.QUEUED
    )
    return change.emitted_at.timestamp()


def test_twenty_runs_with_a_limit_of_three(start_worker, settings):
    settings.RUNS_MAX_ACTIVE_PER_USER = LIMIT  # this process starts the runs; the workers finish them
    env = {"RUNS_MAX_ACTIVE_PER_USER": str(LIMIT), "AGENT_CHUNK_DELAY_MS": "5"}
    workers = [start_worker(concurrency=4, **env), start_worker(concurrency=4, **env)]
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")

    runs = [
        services.run_start(campaign=CampaignFactory(owner=alice), created_by=alice, settings={}) for _ in range(RUNS)
    ]
    assert [run.state for run in runs] == [RunState.PENDING] * LIMIT + [RunState.QUEUED] * (RUNS - LIMIT)

    bobs = services.run_start(campaign=CampaignFactory(owner=bob), created_by=bob, settings={})
    assert bobs.state == RunState.PENDING  # not behind alice's queue
    bobs = wait_for_run(bobs)
    queued_when_bob_finished = OrchestrationRun.objects.filter(campaign__owner=alice, state=RunState.QUEUED).count()

    deadline = time.monotonic() + 240
    for run in runs:
        wait_for_run(run, timeout=max(1.0, deadline - time.monotonic()))
    runs = [OrchestrationRun.objects.get(pk=run.pk) for run in runs]
    logs = "".join(worker.log()[-2000:] for worker in workers)
    assert [run.state for run in runs] == [RunState.COMPLETED] * RUNS, logs
    assert bobs.state == RunState.COMPLETED

    # Never more than three of alice's runs held a share, or were executing, at once; and three did.
    assert most_at_once(active_intervals(runs)) == LIMIT
    executing = [(run.started_at.timestamp(), run.finished_at.timestamp()) for run in runs]
    assert most_at_once(executing) <= LIMIT
    # The queued ones were given their shares in the order they were started.
    assert sorted(runs[LIMIT:], key=promoted_at) == runs[LIMIT:]
    assert queued_when_bob_finished > 0, "bob's run waited for alice's queue"
    print(
        f"{RUNS} runs, limit {LIMIT}: most active at once {most_at_once(active_intervals(runs))}, "
        f"executing {most_at_once(executing)}; alice's runs still queued when bob's finished: "
        f"{queued_when_bob_finished}"
    )
