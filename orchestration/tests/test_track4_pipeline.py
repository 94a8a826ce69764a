"""The track-4 domain on the real stack (a Celery worker, daphne, Redis, PostgreSQL): a plan without
the auditor, a tool run and its outcome, and a tool's approval that outlives every process."""

from __future__ import annotations

import httpx
import pytest
from rest_framework_simplejwt.tokens import AccessToken

from campaigns.tests.factories import CampaignFactory
from orchestration import services
from orchestration.models import Approval, Artifact, RunState
from orchestration.tests.conftest import events_of, names, wait_for_run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_plan_without_the_auditor_completes_after_its_last_step_and_reports(worker):
    campaign = CampaignFactory()
    plan = services.plan_create(
        campaign=campaign,
        goal="Spring",
        strategy="parallel",
        agents=["short_copywriter", "copywriter"],
        created_by=campaign.owner,
    )
    run = wait_for_run(services.plan_execute(plan=plan, created_by=campaign.owner))

    assert run.state == RunState.COMPLETED and run.plan == ["Copy", "ShortCopy"]
    log = events_of(campaign)
    assert "compliance.completed" not in names(log)
    assert names(log)[-2:] == ["campaign.completed", "plan.completed"]
    progress = [e.data for e in log if e.event == "progress"]
    assert all(p["plan_id"] == plan.public_id for p in progress)
    assert [p["percentage"] for p in progress][-1] == 100
    assert [p["step"] for p in progress if p["step"]] == ["Copy", "ShortCopy"]
    completed = log[-1].data
    assert completed["plan_id"] == plan.public_id and completed["success"] is True and completed["error"] is None
    assert [a["type"] for a in completed["artifacts"]] == ["Copy", "ShortCopy"]


def test_a_tool_runs_its_step_alone_and_reports_its_output(worker):
    campaign = CampaignFactory()
    run = services.tool_execute(
        campaign=campaign,
        agent="copywriter",
        tool_name="generate_copy",
        parameters={"instructions": "Mention the refills."},
        require_approval=False,
        requested_by=campaign.owner,
    )
    run = wait_for_run(run)

    assert run.state == RunState.COMPLETED
    artifact = Artifact.objects.get(campaign=campaign)
    outcome = events_of(campaign)[-1]
    assert outcome.event == "tool.completed"
    assert outcome.data["success"] is True and outcome.data["output"] == artifact.content
    assert outcome.data["artifact_id"] == artifact.public_id and outcome.data["execution_time_ms"] >= 0


def test_a_tools_approval_outlives_a_kill_of_every_process(start_web, start_worker):
    """Asked for on one web process, which is then killed with its worker (kill -9); decided on a new
    web process; a new worker runs the tool."""
    campaign = CampaignFactory()
    headers = {"Authorization": f"Bearer {AccessToken.for_user(campaign.owner)}"}
    web, worker = start_web(), start_worker()
    body = {"tool_name": "generate_copy", "require_approval": True}
    response = httpx.post(f"{web.url}/api/campaigns/{campaign.public_id}/tools/", json=body, headers=headers)
    assert response.status_code == 202, response.text
    run_id, approval_id = response.json()["id"], response.json()["approvals"][0]["id"]
    web.kill()
    worker.kill()

    web = start_web()
    start_worker()
    decision = {"decision": "approve"}
    url = f"{web.url}/api/runs/{run_id}/approvals/{approval_id}/"
    response = httpx.post(url, json=decision, headers=headers)

    assert response.status_code == 200, response.text
    run = wait_for_run(Approval.objects.get(public_id=approval_id).run)
    assert run.state == RunState.COMPLETED
    assert names(events_of(campaign))[-1] == "tool.completed" and events_of(campaign)[-1].data["success"] is True


def test_a_plans_run_does_not_stop_for_the_campaigns_review(worker):
    """A plan is what a person asked for: its run goes through even where the campaign asks for a
    review (a plan without the auditor once waited for ever after it)."""
    campaign = CampaignFactory(settings={"require_approval": True})
    plan = services.plan_create(
        campaign=campaign, goal="Spring", strategy="sequential", agents=["copywriter"], created_by=campaign.owner
    )
    run = wait_for_run(services.plan_execute(plan=plan, created_by=campaign.owner))

    assert run.state == RunState.COMPLETED and not run.approvals.exists()
    assert names(events_of(campaign))[-1] == "plan.completed"


def test_the_snapshot_keeps_the_last_audit_after_a_run_without_the_auditor(worker):
    from rest_framework.test import APIClient

    campaign = CampaignFactory()
    audited = wait_for_run(services.run_start(campaign=campaign, created_by=campaign.owner, settings={}))
    assert audited.state == RunState.COMPLETED
    tool = services.tool_execute(
        campaign=campaign,
        agent="visual_designer",
        tool_name="generate_visual",
        parameters={},
        require_approval=False,
        requested_by=campaign.owner,
    )
    wait_for_run(tool)
    client = APIClient()
    client.force_authenticate(campaign.owner)

    snapshot = client.get(f"/api/campaigns/{campaign.public_id}/snapshot/").json()

    assert snapshot["run_id"] == tool.public_id and snapshot["current_state"] == "completed"
    assert snapshot["audit_status"] == "completed"
    assert snapshot["compliance"]["compliance_score"] == audited.audit.score
