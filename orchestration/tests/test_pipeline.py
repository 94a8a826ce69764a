"""Full runs on the real stack: a Celery worker, Redis and PostgreSQL."""

from __future__ import annotations

import pytest

from campaigns.tests.factories import CampaignFactory, UserFactory
from orchestration import services
from orchestration.models import FINISHED_STATES as FINISHED
from orchestration.models import Approval, Artifact, ComplianceAudit, RunState, RunStep, StepStatus
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


def test_a_sequential_run_makes_one_artifact_at_a_time_in_the_plans_order(worker):
    """The "sequential" strategy: ShortCopy waits for the Copy, and Visual for the ShortCopy (by
    default they run side by side once the Copy exists)."""
    campaign = CampaignFactory(owner=UserFactory(username="alice"))
    run = wait_for_run(start(campaign, strategy="sequential"))
    assert run.state == RunState.COMPLETED, worker.log()[-3000:]
    steps = list(RunStep.objects.filter(run=run).exclude(name="audit").order_by("started_at"))
    assert [step.name for step in steps] == ["Copy", "ShortCopy", "Visual"]
    for earlier, later in zip(steps, steps[1:], strict=False):
        assert earlier.finished_at <= later.started_at, (earlier.name, later.name)
    events = events_of(campaign)
    generated = [e.data["artifact"]["type"] for e in events if e.event == "artifact.generated"]
    assert generated == ["Copy", "ShortCopy", "Visual"]


def step_events(campaign, event, step):
    return [e for e in events_of(campaign) if e.event == event and e.data.get("step") == step]


def assert_contiguous(campaign):
    sequences = [e.sequence for e in events_of(campaign)]
    assert sequences == list(range(1, len(sequences) + 1))


def test_a_step_failing_twice_then_succeeding_completes(worker):
    campaign = CampaignFactory(settings={"simulate": {"Copy": {"fail_times": 2}}})
    run = wait_for_run(start(campaign))
    assert run.state == RunState.COMPLETED
    assert [e.data["attempt"] for e in step_events(campaign, "step.started", "Copy")] == [1, 2, 3]
    assert "generation.failed" not in names(events_of(campaign))
    assert Artifact.objects.filter(run=run, type="Copy").count() == 1
    assert_contiguous(campaign)


def test_a_step_failing_beyond_the_bound_fails_the_run_once(worker):
    campaign = CampaignFactory(settings={"simulate": {"ShortCopy": {"fail_times": 20}}})
    run = wait_for_run(start(campaign))
    assert run.state == RunState.FAILED
    failures = [e for e in events_of(campaign) if e.event == "generation.failed"]
    assert len(failures) == 1
    assert failures[0].data["step"] == "ShortCopy"
    assert failures[0].data["attempts"] == 4
    assert "Gave up after 4 attempts" in failures[0].data["error_message"]
    assert events_of(campaign)[-1].event == "generation.failed"
    assert_contiguous(campaign)


def test_a_permanent_error_fails_at_once(worker):
    campaign = CampaignFactory(settings={"simulate": {"Copy": {"fail_permanently": True}}})
    run = wait_for_run(start(campaign))
    assert run.state == RunState.FAILED
    assert len(step_events(campaign, "step.started", "Copy")) == 1
    assert "permanent" in run.error


def test_cancel_mid_run_stops_the_step_and_nothing_follows(worker):
    import time

    campaign = CampaignFactory(settings={"simulate": {"Copy": {"delay_ms": 50}}})
    run = start(campaign)
    deadline = time.monotonic() + 60
    while not RunStep.objects.filter(run=run, name="Copy", status=StepStatus.RUNNING).exists():
        assert time.monotonic() < deadline, "the worker never took the Copy step"
        time.sleep(0.05)  # polling the database for the condition above, bounded by the deadline
    services.run_cancel(run=run, requested_by=campaign.owner)
    run = wait_for_run(run)
    assert run.state == RunState.CANCELLED
    last = events_of(campaign)[-1]
    assert last.event == "run.cancelled"
    assert last.data == {"run_id": run.public_id, "requested_by": campaign.owner.username}
    # The worker notices at its next lease renewal (every 0.25 s) and lets go of the step.
    stopped = "stopped, its claim was taken away"
    deadline = time.monotonic() + 60
    while stopped not in worker.log():
        assert time.monotonic() < deadline, worker.log()[-2000:]
        time.sleep(0.05)  # polling the worker's log for the condition above, bounded by the deadline
    # The step's worker has let go: nothing can be written for the run any more.
    assert Artifact.objects.filter(run=run).count() == 0
    assert events_of(campaign)[-1].event == "run.cancelled", "nothing happens after the cancellation"


def test_retry_after_failure_resumes_after_the_last_checkpoint(worker):
    # Visual keeps failing (an outage) until its retries are spent; ShortCopy completes meanwhile.
    campaign = CampaignFactory(settings={"simulate": {"Visual": {"fail_times": 20}}})
    run = wait_for_run(start(campaign))
    assert run.state == RunState.FAILED
    assert sorted(run.artifacts.values_list("type", flat=True)) == ["Copy", "ShortCopy"]
    # The outage ends.
    campaign.settings = {}
    campaign.save()
    run.settings = {}
    run.save()
    services.run_retry(run=run, requested_by=campaign.owner)
    run = wait_for_run(run)
    assert run.state == RunState.COMPLETED
    assert sorted(run.artifacts.values_list("type", flat=True)) == ["Copy", "ShortCopy", "Visual"]
    assert len(step_events(campaign, "step.started", "Copy")) == 1, "the Copy checkpoint was kept"
    assert len(step_events(campaign, "step.started", "ShortCopy")) == 1
    assert_contiguous(campaign)


def test_a_killed_worker_is_noticed_and_the_run_resumes_from_its_checkpoint(start_worker):
    import time

    first = start_worker()
    campaign = CampaignFactory(settings={"simulate": {"ShortCopy": {"delay_ms": 100}, "Visual": {"delay_ms": 100}}})
    run = start(campaign)
    deadline = time.monotonic() + 30
    short_copy = RunStep.objects.filter(run=run, name="ShortCopy")
    while short_copy.get().status != StepStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the database for the condition above, bounded by the deadline
    assert short_copy.get().status == StepStatus.RUNNING
    first.kill()  # kill -9, mid-step (the worker holds the ShortCopy lease): no chance to clean up
    killed_at = time.monotonic()
    run.refresh_from_db()
    assert run.state == RunState.GENERATING
    start_worker()
    run = wait_for_run(run, timeout=120)
    assert run.state == RunState.COMPLETED
    print(f"resumed and completed {time.monotonic() - killed_at:.1f} s after the kill")
    for kind in ("Copy", "ShortCopy", "Visual"):
        assert Artifact.objects.filter(campaign=campaign, type=kind).count() == 1
    assert len(step_events(campaign, "step.started", "Copy")) == 1, "the Copy checkpoint was not redone"
    assert len(step_events(campaign, "step.started", "ShortCopy")) == 2
    assert_contiguous(campaign)
    thoughts = [e.data["thought"] for e in events_of(campaign) if e.event == "agent.thought"]
    assert any("stopped responding" in thought for thought in thoughts)


def test_approval_approve_continues_to_the_audit(worker):

    campaign = CampaignFactory(settings={"require_approval": True})
    run = wait_for_run(start(campaign), states=[RunState.AWAITING_APPROVAL])
    required = [e for e in events_of(campaign) if e.event == "approval.required"]
    assert len(required) == 1
    approval = Approval.objects.get(public_id=required[0].data["approval_id"])
    assert not ComplianceAudit.objects.filter(run=run).exists()
    services.approval_decide(
        run=run, approval_public_id=approval.public_id, decision="approve", decided_by=campaign.owner
    )
    run = wait_for_run(run)
    assert run.state == RunState.COMPLETED
    resolved = [e for e in events_of(campaign) if e.event == "approval.resolved"]
    assert resolved[0].data == {"approval_id": approval.public_id, "decision": "approve", "by": campaign.owner.username}
    assert ComplianceAudit.objects.filter(run=run).exists()


def test_approval_reject_regenerates_the_artifact_with_the_comment(worker):
    campaign = CampaignFactory(settings={"require_approval": True})
    run = wait_for_run(start(campaign), states=[RunState.AWAITING_APPROVAL])
    approval = run.approvals.get()
    services.approval_decide(
        run=run,
        approval_public_id=approval.public_id,
        decision="reject",
        comment="Mention the lifetime warranty.",
        artifact_type="ShortCopy",
        decided_by=campaign.owner,
    )
    run = wait_for_run(run, states=[RunState.AWAITING_APPROVAL, *FINISHED])
    assert run.state == RunState.AWAITING_APPROVAL
    versions = list(Artifact.objects.filter(campaign=campaign, type="ShortCopy").order_by("version"))
    assert [a.version for a in versions] == [1, 2]
    assert "lifetime warranty" in versions[1].content
    assert Artifact.objects.filter(campaign=campaign, type="Copy").count() == 1, "only the rejected one is rewritten"
    second = run.approvals.get(state="pending")
    services.approval_decide(
        run=run, approval_public_id=second.public_id, decision="approve", decided_by=campaign.owner
    )
    assert wait_for_run(run).state == RunState.COMPLETED
    assert_contiguous(campaign)


def test_a_revision_streams_the_next_version_and_audits_again(worker):
    campaign = CampaignFactory()
    first = wait_for_run(start(campaign))
    assert first.state == RunState.COMPLETED
    revision = services.revision_start(
        campaign=campaign,
        artifact_type="Copy",
        instructions="Make it shorter and mention the free refills.",
        created_by=campaign.owner,
    )
    revision = wait_for_run(revision)
    assert revision.state == RunState.COMPLETED
    copies = list(Artifact.objects.filter(campaign=campaign, type="Copy").order_by("version"))
    assert [a.version for a in copies] == [1, 2], "earlier versions are kept"
    assert "free refills" in copies[1].content
    later = [e for e in events_of(campaign) if e.run_public_id == revision.public_id]
    generated = [e for e in later if e.event == "artifact.generated"]
    assert [(e.data["artifact"]["type"], e.data["artifact"]["version"]) for e in generated] == [("Copy", 2)]
    assert "step.started" in names(later) and "compliance.completed" in names(later)
    assert ComplianceAudit.objects.filter(run=revision).exists()


def test_a_run_over_its_token_budget_stops_with_a_clear_reason(worker):
    campaign = CampaignFactory(settings={"max_tokens": 150})
    run = wait_for_run(start(campaign))
    assert run.state == RunState.FAILED
    failed = events_of(campaign)[-1]
    assert failed.event == "generation.failed"
    assert "token budget" in failed.data["error_message"] and "max_tokens is 150" in failed.data["error_message"]
    assert "usage.updated" in names(events_of(campaign))


def test_a_run_over_its_cost_budget_stops(worker):
    campaign = CampaignFactory(settings={"max_cost": 0.0001})
    run = wait_for_run(start(campaign))
    assert run.state == RunState.FAILED
    assert "cost budget" in run.error


def test_a_run_with_the_openai_provider_survives_a_rate_limit(start_worker):
    from orchestration.tests.fake_openai import FakeOpenAI

    secret = "sk-e2e-secret-never-logged"
    with FakeOpenAI([429, "ok"]) as fake:
        worker = start_worker(
            AGENT_PROVIDER="openai", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY=secret, OPENAI_MODEL="local"
        )
        campaign = CampaignFactory()
        run = wait_for_run(start(campaign))
    assert run.state == RunState.COMPLETED, worker.log()[-3000:]
    assert [e.data["attempt"] for e in step_events(campaign, "step.started", "Copy")] == [1, 2]
    visual = Artifact.objects.get(run=run, type="Visual")
    assert visual.content.startswith("<svg") and "Bottles that keep up" in visual.content
    assert run.prompt_tokens >= 42 * 3
    assert secret not in worker.log()


def test_a_run_with_the_openai_provider_fails_at_once_on_a_400(start_worker):
    from orchestration.tests.fake_openai import FakeOpenAI

    with FakeOpenAI([400]) as fake:
        start_worker(AGENT_PROVIDER="openai", OPENAI_BASE_URL=fake.base_url, OPENAI_MODEL="local")
        campaign = CampaignFactory()
        run = wait_for_run(start(campaign))
    assert run.state == RunState.FAILED
    assert len(fake.requests) == 1
    failed = events_of(campaign)[-1]
    assert failed.event == "generation.failed" and "HTTP 400" in failed.data["error_message"]


CODE_LIKE_NAMES = [
    "Javascript: The Good Parts",
    "Learn data:text/html tricks",
    "<script> tags, explained",
    "Buy one = get one",
    'Set src="logo.png" and href="#top"',
]


def test_a_campaign_named_like_code_passes_its_audit(worker):
    # The banner shows the name as text (escaped); text that reads like markup is not markup.
    owner = UserFactory(username="alice")
    runs = [start(CampaignFactory(owner=owner, name=name)) for name in CODE_LIKE_NAMES]
    flagged = {}
    for name, run in zip(CODE_LIKE_NAMES, runs, strict=True):
        run = wait_for_run(run)
        assert run.state == RunState.COMPLETED, worker.log()[-3000:]
        assert Artifact.objects.get(run=run, type="Visual").metadata["headline"] == name
        audit = ComplianceAudit.objects.get(run=run)
        if not audit.is_compliant or audit.issues:
            flagged[name] = [i["issue_description"] for i in audit.issues]
    assert flagged == {}


def test_a_stored_simulate_is_ignored_where_the_server_does_not_enable_it(start_worker):
    # Stored before the switch was turned off (the API now refuses it): the run runs for real.
    worker = start_worker(ORCHESTRATION_SIMULATION="0")
    simulate = {"Copy": {"fail_permanently": True}, "Visual": {"fail_times": 20}, "audit": {"fail_permanently": True}}
    campaign = CampaignFactory(settings={"simulate": simulate})
    run = wait_for_run(start(campaign))
    assert run.settings["simulate"] == simulate
    assert run.state == RunState.COMPLETED, run.error
    for step in ("Copy", "ShortCopy", "Visual", "audit"):
        assert [e.data["attempt"] for e in step_events(campaign, "step.started", step)] == [1], step
    assert "ignores settings.simulate (ORCHESTRATION_SIMULATION is off)" in worker.log()


def test_a_simulated_delay_longer_than_the_lease_keeps_the_step_on_its_worker(start_worker):
    # Every pause renews the lease, so recovery never hands the step to a second worker.
    start_worker(RUN_LEASE_SECONDS="2")
    delays = {"ShortCopy": {"delay_ms": 2500}, "audit": {"delay_ms": 2500}}
    campaign = CampaignFactory(name="Tea", brief="Tea.", settings={"simulate": delays})
    run = wait_for_run(start(campaign), timeout=60)
    assert run.state == RunState.COMPLETED, run.error
    for step in ("ShortCopy", "audit"):
        assert [e.data["attempt"] for e in step_events(campaign, "step.started", step)] == [1], step
    thoughts = [e.data["thought"] for e in events_of(campaign) if e.event == "agent.thought"]
    assert not [thought for thought in thoughts if "stopped responding" in thought]


def test_cancel_during_a_long_simulated_delay_frees_the_worker(worker):
    """The audit step is in a 10-minute pause on the worker when the run is cancelled: the worker lets
    go of it at its next lease renewal, instead of sleeping out the ten minutes."""
    import time

    campaign = CampaignFactory(settings={"simulate": {"audit": {"delay_ms": 600_000}}})
    run = wait_for_run(start(campaign), states=[RunState.AUDITING])
    deadline = time.monotonic() + 60
    while not RunStep.objects.filter(run=run, name="audit", status=StepStatus.RUNNING).exists():
        assert time.monotonic() < deadline, "the worker never took the audit step"
        time.sleep(0.05)  # polling the database for the condition above, bounded by the deadline
    services.run_cancel(run=run, requested_by=campaign.owner)
    stopped = "step audit stopped, its claim was taken away"
    deadline = time.monotonic() + 60  # generous on a loaded machine; the pause itself is 600 s
    while stopped not in worker.log():
        assert time.monotonic() < deadline, worker.log()[-2000:]
        time.sleep(0.05)  # polling the worker's log for the condition above, bounded by the deadline
    assert wait_for_run(run).state == RunState.CANCELLED
