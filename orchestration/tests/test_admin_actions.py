"""The admin actions that drive runs, as an operator's browser sees them: pages, messages and rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import constants
from django.db.models import Model
from django.test import Client

from campaigns.models import Campaign
from campaigns.tests.factories import ArtifactFactory, CampaignFactory, RunFactory
from eventlog.models import CampaignEvent
from orchestration.models import OrchestrationRun, RunState

pytestmark = pytest.mark.django_db

CAMPAIGNS = "/admin/campaigns/campaign/"
RUNS = "/admin/orchestration/orchestrationrun/"
ARTIFACTS = "/admin/orchestration/artifact/"


@pytest.fixture
def campaign(alice) -> Campaign:
    return CampaignFactory(owner=alice, name="Bottle launch", settings={"max_tokens": 500})


def act(client: Client, changelist: str, action: str, *objects: Model, **extra: str) -> Any:
    """Run an action from a changelist as the browser does, following the redirect back to it."""
    data = {"action": action, "_selected_action": [str(obj.pk) for obj in objects], "index": "0", **extra}
    return client.post(changelist, data, follow=True)


def shown(response: Any) -> list[tuple[int, str]]:
    """The messages the page shows the operator, with their levels."""
    return [(message.level, str(message)) for message in response.context["messages"]]


def runs_of(campaign: Campaign) -> list[OrchestrationRun]:
    return list(OrchestrationRun.objects.filter(campaign=campaign).order_by("created_at", "id"))


def last_event(campaign: Campaign) -> CampaignEvent | None:
    return CampaignEvent.objects.filter(campaign=campaign).order_by("sequence").last()


# --- start_run -------------------------------------------------------------------------------------


def test_start_run_starts_a_pending_run(operator_client, operator, campaign):
    response = act(operator_client, CAMPAIGNS, "start_run", campaign)

    assert response.status_code == 200
    assert response.redirect_chain and response.redirect_chain[-1][0].startswith(CAMPAIGNS)
    [run] = runs_of(campaign)
    assert run.state == RunState.PENDING and run.kind == "generation"
    assert run.plan == ["Copy", "ShortCopy", "Visual", "audit"]
    assert run.created_by == operator
    assert run.settings == {"max_tokens": 500}
    assert list(run.steps.values_list("name", "status")) == [
        ("Copy", "pending"),
        ("ShortCopy", "pending"),
        ("Visual", "pending"),
        ("audit", "pending"),
    ]
    assert shown(response) == [(constants.SUCCESS, "Started runs for 1 of 1.")]
    event = last_event(campaign)
    assert event.event == "orchestration.state_changed" and event.run_public_id == run.public_id
    assert event.data == {"state": "pending", "previous_state": None}


def test_start_run_a_second_time_warns_and_starts_nothing(operator_client, campaign):
    act(operator_client, CAMPAIGNS, "start_run", campaign)
    events_before = CampaignEvent.objects.filter(campaign=campaign).count()

    response = act(operator_client, CAMPAIGNS, "start_run", campaign)

    assert response.status_code == 200
    assert len(runs_of(campaign)) == 1
    messages = shown(response)
    assert len(messages) == 1
    level, text = messages[0]
    assert level == constants.WARNING
    assert campaign.public_id in text and "active run" in text
    assert CampaignEvent.objects.filter(campaign=campaign).count() == events_before


def test_start_run_on_several_campaigns_reports_each(operator_client, campaign, alice):
    busy = CampaignFactory(owner=alice, name="Busy launch")
    RunFactory(campaign=busy, state=RunState.GENERATING)

    response = act(operator_client, CAMPAIGNS, "start_run", campaign, busy)

    assert [run.state for run in runs_of(campaign)] == ["pending"]
    assert [run.state for run in runs_of(busy)] == ["generating"]
    levels = dict(shown(response))
    assert "Started runs for 1 of 2." in levels.get(constants.SUCCESS, "")
    assert busy.public_id in levels.get(constants.WARNING, "")


# --- cancel_runs and retry_runs --------------------------------------------------------------------


def test_cancel_runs_cancels_a_running_run(operator_client, campaign):
    run = RunFactory(campaign=campaign, state=RunState.GENERATING, steps={"Copy": "completed", "ShortCopy": "running"})

    response = act(operator_client, RUNS, "cancel_runs", run)

    assert response.status_code == 200
    run.refresh_from_db()
    assert run.state == RunState.CANCELLED
    assert run.cancel_requested and run.cancel_requested_by == "charlie"
    assert run.finished_at is not None
    assert dict(run.steps.values_list("name", "status"))["ShortCopy"] == "cancelled"
    assert shown(response) == [(constants.SUCCESS, "Cancelled 1 of 1.")]
    event = last_event(campaign)
    assert event.event == "run.cancelled"
    assert event.data == {"run_id": run.public_id, "requested_by": "charlie"}


@pytest.mark.parametrize("state", ["completed", "failed", "cancelled"])
def test_cancel_runs_on_a_finished_run_warns_and_changes_nothing(operator_client, campaign, state):
    run = RunFactory(campaign=campaign, state=state)

    response = act(operator_client, RUNS, "cancel_runs", run)

    assert response.status_code == 200
    run.refresh_from_db()
    assert run.state == state and not run.cancel_requested
    [(level, text)] = shown(response)
    assert level == constants.WARNING and run.public_id in text
    assert not CampaignEvent.objects.filter(campaign=campaign).exists()


def test_retry_runs_makes_a_failed_run_pending(operator_client, campaign):
    run = RunFactory(
        campaign=campaign, state=RunState.FAILED, error="Gave up.", steps={"Copy": "completed", "ShortCopy": "failed"}
    )

    response = act(operator_client, RUNS, "retry_runs", run)

    assert response.status_code == 200
    run.refresh_from_db()
    assert run.state == RunState.PENDING
    assert run.error == "" and run.finished_at is None
    assert dict(run.steps.values_list("name", "status")) == {
        "Copy": "completed",
        "ShortCopy": "pending",
        "Visual": "pending",
        "audit": "pending",
    }
    assert shown(response) == [(constants.SUCCESS, "Retried 1 of 1.")]
    states = [e.data for e in CampaignEvent.objects.filter(campaign=campaign, event="orchestration.state_changed")]
    assert states == [{"state": "pending", "previous_state": "failed"}]
    thoughts = [e.data["thought"] for e in CampaignEvent.objects.filter(campaign=campaign, event="agent.thought")]
    assert thoughts == ["Retry requested by charlie."]


@pytest.mark.parametrize("state", ["pending", "generating", "completed"])
def test_retry_runs_on_a_run_that_did_not_fail_warns(operator_client, campaign, state):
    run = RunFactory(campaign=campaign, state=state)

    response = act(operator_client, RUNS, "retry_runs", run)

    run.refresh_from_db()
    assert run.state == state
    [(level, text)] = shown(response)
    assert level == constants.WARNING and run.public_id in text
    assert not CampaignEvent.objects.filter(campaign=campaign).exists()


# --- request_revision ------------------------------------------------------------------------------


@pytest.fixture
def copy(campaign):
    run = RunFactory(campaign=campaign, state=RunState.COMPLETED, steps="completed")
    return ArtifactFactory(run=run, type="Copy")


def test_request_revision_first_shows_the_instructions_form(operator_client, campaign, copy):
    response = act(operator_client, ARTIFACTS, "request_revision", copy)

    assert response.status_code == 200
    assert not response.redirect_chain
    html = response.content.decode()
    assert "Instructions" in html
    assert 'name="instructions"' in html
    assert f'value="{copy.pk}"' in html, "the selected artifact is carried to the next step"
    assert copy.public_id in html
    assert len(runs_of(campaign)) == 1, "nothing is started before the operator writes instructions"


def test_request_revision_with_instructions_starts_a_revision_run(operator_client, operator, campaign, copy):
    response = act(
        operator_client, ARTIFACTS, "request_revision", copy, apply="1", instructions="  Mention the free refills.  "
    )

    assert response.status_code == 200
    assert response.redirect_chain and response.redirect_chain[-1][0].startswith(ARTIFACTS)
    revision = runs_of(campaign)[-1]
    assert revision.kind == "revision" and revision.state == RunState.PENDING
    assert revision.plan == ["Copy", "audit"]
    assert revision.created_by == operator
    assert dict(revision.steps.values_list("name", "instructions")) == {
        "Copy": "Mention the free refills.",
        "audit": "",
    }
    assert shown(response) == [(constants.SUCCESS, "Requested revisions of 1 of 1.")]


@pytest.mark.parametrize("instructions", ["", "   \n "])
def test_request_revision_with_blank_instructions_shows_an_error_and_starts_nothing(
    operator_client, campaign, copy, instructions
):
    response = act(operator_client, ARTIFACTS, "request_revision", copy, apply="1", instructions=instructions)

    assert response.status_code == 200
    assert "Instructions" in response.content.decode(), "the form is shown again"
    assert shown(response) == [(constants.ERROR, "Write the instructions for the agent.")]
    assert len(runs_of(campaign)) == 1
    assert not CampaignEvent.objects.filter(campaign=campaign).exists()


def test_request_revision_while_a_run_is_active_warns(operator_client, campaign, copy):
    RunFactory(campaign=campaign, state=RunState.GENERATING)

    response = act(operator_client, ARTIFACTS, "request_revision", copy, apply="1", instructions="Shorter.")

    assert len(runs_of(campaign)) == 2
    [(level, text)] = shown(response)
    assert level == constants.WARNING and "active run" in text


# --- the same rules as the API ---------------------------------------------------------------------


def test_deleting_a_campaign_with_an_active_run_is_refused_in_the_admin_too(operator_client, campaign):
    """API.md: deleting a campaign that has an active run is refused; the admin is another door."""
    run = RunFactory(campaign=campaign, state=RunState.GENERATING)

    act(operator_client, CAMPAIGNS, "delete_selected", campaign, post="yes")

    assert Campaign.objects.filter(pk=campaign.pk).exists()
    run.refresh_from_db()
    assert run.state == RunState.GENERATING


def test_deleting_a_campaign_with_an_active_run_from_its_page_is_refused_too(operator_client, campaign):
    run = RunFactory(campaign=campaign, state=RunState.GENERATING)

    operator_client.post(f"{CAMPAIGNS}{campaign.pk}/delete/", {"post": "yes"}, follow=True)

    assert Campaign.objects.filter(pk=campaign.pk).exists()
    assert OrchestrationRun.objects.filter(pk=run.pk, state=RunState.GENERATING).exists()


def test_a_non_staff_user_cannot_run_actions(client, alice, campaign):
    client.force_login(alice)

    response = client.post(CAMPAIGNS, {"action": "start_run", "_selected_action": [str(campaign.pk)]})

    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not runs_of(campaign)


# --- track-4: tools' approvals and plans ------------------------------------------------------------

APPROVALS = "/admin/orchestration/approval/"
PLANS = "/admin/orchestration/orchestrationplan/"


def test_approving_a_tools_approval_in_the_admin_starts_the_tool(operator_client, operator, campaign):
    from orchestration import services

    run = services.tool_execute(
        campaign=campaign,
        agent="copywriter",
        tool_name="generate_copy",
        parameters={},
        require_approval=True,
        requested_by=operator,
    )
    approval = run.approvals.get()

    response = act(operator_client, APPROVALS, "approve", approval)

    assert shown(response) == [(constants.SUCCESS, "Approved 1 of 1.")]
    approval.refresh_from_db()
    run.refresh_from_db()
    assert approval.state == "approved" and approval.decided_by == operator
    assert run.state == RunState.PENDING  # queued for a worker to begin


def test_rejecting_in_the_admin_cancels_a_tool_but_a_review_needs_its_page(operator_client, campaign):
    from orchestration import services

    tool_run = services.tool_execute(
        campaign=campaign,
        agent="copywriter",
        tool_name="generate_copy",
        parameters={},
        require_approval=True,
        requested_by=None,
    )
    review = RunFactory(campaign=CampaignFactory(), state=RunState.AWAITING_APPROVAL, steps="completed")
    review_approval = review.approvals.create(step="generation", reason="Review")

    response = act(operator_client, APPROVALS, "reject", tool_run.approvals.get(), review_approval)

    levels = dict((level, text) for level, text in shown(response))
    assert "A rejection needs a comment" in levels[constants.WARNING]
    assert levels[constants.SUCCESS] == "Rejected 1 of 2."
    tool_run.refresh_from_db()
    review.refresh_from_db()
    assert tool_run.state == RunState.CANCELLED and review.state == RunState.AWAITING_APPROVAL


def test_executing_plans_in_the_admin_starts_each_once(operator_client, operator, campaign):
    from orchestration import services

    plan = services.plan_create(campaign=campaign, goal="Spring", strategy="parallel", agents=None, created_by=operator)

    first = act(operator_client, PLANS, "execute", plan)
    second = act(operator_client, PLANS, "execute", plan)

    assert shown(first) == [(constants.SUCCESS, "Started 1 of 1.")]
    assert shown(second)[0][0] == constants.WARNING and "executed already" in shown(second)[0][1]
    plan.refresh_from_db()
    assert plan.run is not None and runs_of(campaign) == [plan.run]
    page = operator_client.get(f"{PLANS}{plan.pk}/change/")
    assert page.status_code == 200 and plan.public_id in page.content.decode()


def test_an_operator_makes_a_plan_in_the_admin_through_the_service(operator_client, operator, campaign):
    form = operator_client.get(f"{PLANS}add/")
    assert form.status_code == 200 and 'name="agents"' in form.content.decode()
    data = {"campaign": str(campaign.pk), "goal": "Spring", "strategy": "sequential", "agents": ["copywriter"]}

    response = operator_client.post(f"{PLANS}add/", data, follow=True)

    assert response.status_code == 200
    plan = campaign.plans.get()
    assert plan.created_by == operator and plan.strategy == "sequential"
    assert [step["id"] for step in plan.steps] == ["Copy"]
    assert CampaignEvent.objects.filter(campaign=campaign, event="plan.created").count() == 1
    refused = operator_client.post(f"{PLANS}add/", {**data, "goal": "  ", "agents": []})
    assert refused.status_code == 200 and campaign.plans.count() == 1  # the form shows its errors
    assert "This field is required." in refused.content.decode()
