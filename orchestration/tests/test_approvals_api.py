"""Approvals through the REST API (orchestration/api.py ApprovalDecide): approve, reject all or one
artifact with a comment, and what is refused.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from campaigns.tests.factories import RunFactory
from orchestration import services
from orchestration.models import RunState, RunStep
from orchestration.tests.api import (
    GENERATED,
    ISO_UTC,
    approval_url,
    assert_json_error,
    database,
    events,
    get_run,
    post,
    run_url,
    step_of,
)

pytestmark = pytest.mark.django_db


# --- Approvals -------------------------------------------------------------------------------------


def test_approving_answers_the_approval_and_moves_the_run_to_the_audit(alice_api, campaign, awaiting):
    run, approval = awaiting

    response = post(alice_api, approval_url(run, approval), {"decision": "approve"})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == approval.public_id
    assert body["run_id"] == run.public_id
    assert body["state"] == "approved"
    assert body["decided_by"] == "alice"
    assert body["decided_at"] is not None and ISO_UTC.match(body["decided_at"])
    after = get_run(alice_api, run)
    assert after["state"] == "auditing"
    assert step_of(after, "audit")["status"] == "queued"
    assert [a["state"] for a in after["approvals"]] == ["approved"]
    log = events(alice_api, campaign)
    assert [e["event"] for e in log] == ["approval.resolved", "orchestration.state_changed"]
    assert log[0]["data"] == {"approval_id": approval.public_id, "decision": "approve", "by": "alice"}
    assert log[1]["data"] == {"state": "auditing", "previous_state": "awaiting_approval"}


def test_rejecting_without_a_comment_is_400_and_changes_nothing(alice_api, awaiting):
    run, approval = awaiting
    before = database()

    for body in (
        {"decision": "reject"},
        {"decision": "reject", "comment": ""},
        {"decision": "reject", "comment": "  "},
    ):
        response = post(alice_api, approval_url(run, approval), body)
        assert_json_error(response, 400)

    assert database() == before
    assert get_run(alice_api, run)["state"] == "awaiting_approval"


def test_rejecting_one_artifact_rewrites_only_it_with_the_comment(alice_api, campaign, awaiting):
    run, approval = awaiting
    comment = "Mention the lifetime warranty."

    response = post(
        alice_api, approval_url(run, approval), {"decision": "reject", "comment": comment, "artifact_type": "ShortCopy"}
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "rejected" and body["comment"] == comment and body["decided_by"] == "alice"
    after = get_run(alice_api, run)
    assert after["state"] == "generating"
    assert step_of(after, "ShortCopy")["status"] == "queued"  # its input (the Copy) is there: it is sent at once
    assert step_of(after, "ShortCopy")["attempt"] == 0
    assert step_of(after, "Copy")["status"] == "completed"
    assert step_of(after, "Visual")["status"] == "completed"
    assert RunStep.objects.get(run=run, name="ShortCopy").instructions == comment, "the agent rewrites with it"
    assert RunStep.objects.get(run=run, name="Copy").instructions == ""
    resolved = [e for e in events(alice_api, campaign) if e["event"] == "approval.resolved"]
    assert resolved[0]["data"] == {"approval_id": approval.public_id, "decision": "reject", "by": "alice"}


def test_rejecting_without_a_type_rewrites_everything_from_the_copy(alice_api, awaiting):
    run, approval = awaiting

    response = post(alice_api, approval_url(run, approval), {"decision": "reject", "comment": "Too formal."})

    assert response.status_code == 200, response.content
    after = get_run(alice_api, run)
    assert after["state"] == "generating"
    assert step_of(after, "Copy")["status"] == "queued"
    assert step_of(after, "ShortCopy")["status"] == "pending", "waits for the new copy"
    assert step_of(after, "Visual")["status"] == "pending"
    assert set(RunStep.objects.filter(run=run).exclude(name="audit").values_list("instructions", flat=True)) == {
        "Too formal."
    }


def test_deciding_twice_is_409(alice_api, awaiting):
    run, approval = awaiting
    assert post(alice_api, approval_url(run, approval), {"decision": "approve"}).status_code == 200
    before = database()

    for body in ({"decision": "approve"}, {"decision": "reject", "comment": "Changed my mind."}):
        assert set(assert_json_error(post(alice_api, approval_url(run, approval), body), 409)) == {"detail"}

    assert database() == before


def test_an_unknown_approval_is_404(alice_api, campaign, awaiting):
    run, _ = awaiting
    other = RunFactory(campaign=campaign, state=RunState.COMPLETED)
    elsewhere = other.approvals.create(step="generation", reason="Another run's approval.", state="approved")
    before = database()

    assert set(assert_json_error(post(alice_api, approval_url(run, "apr_nope"), {"decision": "approve"}), 404)) == {
        "detail"
    }
    # An approval of another run is not this run's.
    assert_json_error(post(alice_api, approval_url(run, elsewhere), {"decision": "approve"}), 404)
    assert database() == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"decision": "maybe"},
        {"decision": "APPROVE"},
        {"decision": None},
        {"decision": ["approve"]},
        {"decision": "reject", "comment": 42},
        {"decision": "reject", "comment": "Fine.", "artifact_type": "Banner"},
        {"decision": "reject", "comment": "Fine.", "artifact_type": "audit"},
        {"decision": "reject", "comment": "Mention\u0000it."},
        {"decision": "reject", "comment": "x" * 5001},
        [],
    ],
    ids=repr,
)
def test_a_bad_decision_is_400_and_changes_nothing(alice_api, awaiting, body):
    run, approval = awaiting
    before = database()

    assert_json_error(post(alice_api, approval_url(run, approval), body), 400)

    assert database() == before


def test_a_pending_approval_of_a_cancelled_run_can_no_longer_be_decided(alice_api, awaiting):
    run, approval = awaiting
    assert post(alice_api, run_url(run, "cancel")).status_code == 202
    before = database()

    assert_json_error(post(alice_api, approval_url(run, approval), {"decision": "approve"}), 409)
    assert database() == before


def test_retrying_a_run_cancelled_while_awaiting_approval_asks_for_approval_again(alice_api, campaign):
    """The generated set was never approved: resuming the run must not slip it past the reviewer."""
    run = RunFactory(
        campaign=campaign,
        state=RunState.AWAITING_APPROVAL,
        settings={"require_approval": True},
        steps=dict(GENERATED),
    )
    run.steps.exclude(name="audit").update(finished_at=timezone.now())
    run.approvals.create(step="generation", reason="Review the generated artifacts before the audit.")
    assert post(alice_api, run_url(run, "cancel")).status_code == 202
    assert post(alice_api, run_url(run, "retry")).status_code == 202

    services.run_begin(run_pk=run.pk)  # what the worker does first with the retried run

    after = get_run(alice_api, run)
    assert after["state"] == "awaiting_approval", "the audit must wait for an approval"
    assert step_of(after, "audit")["status"] == "pending"
    assert [a["state"] for a in after["approvals"]].count("pending") == 1
