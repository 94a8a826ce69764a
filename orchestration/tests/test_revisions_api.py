"""Revisions through the REST API (orchestration/api.py ArtifactRevision): an artifact's next version
from instructions, and what is refused.
"""

from __future__ import annotations

import pytest

from campaigns.tests.factories import ArtifactFactory, RunFactory
from orchestration.models import OrchestrationRun, RunState
from orchestration.tests.api import (
    assert_json_error,
    database,
    events,
    get_run,
    post,
    revisions_url,
    runs_url,
)

pytestmark = pytest.mark.django_db


# --- Revisions -------------------------------------------------------------------------------------


@pytest.fixture
def generated(campaign) -> OrchestrationRun:
    """A completed run that wrote the campaign's Copy, ShortCopy and Visual."""
    run = RunFactory(campaign=campaign, state=RunState.COMPLETED, steps="completed")
    for kind, agent in (("Copy", "copywriter"), ("ShortCopy", "short_copywriter"), ("Visual", "visual_designer")):
        ArtifactFactory(run=run, type=kind, agent_name=agent)
    return run


@pytest.mark.parametrize(("kind", "agent"), [("Copy", "copywriter"), ("Visual", "visual_designer")])
def test_a_revision_starts_a_run_of_that_artifact_and_the_audit(alice_api, campaign, generated, kind, agent):
    response = post(alice_api, revisions_url(campaign, kind), {"instructions": "Mention the free refills."})

    assert response.status_code == 202, response.content
    run = response.json()
    assert run["id"].startswith("run_") and run["id"] != generated.public_id
    assert run["campaign_id"] == campaign.public_id
    assert run["kind"] == "revision"
    assert run["state"] == "pending"
    assert run["plan"] == [kind, "audit"]
    assert [(step["step"], step["agent"], step["status"]) for step in run["steps"]] == [
        (kind, agent, "pending"),
        ("audit", "compliance_auditor", "pending"),
    ]
    assert get_run(alice_api, run["id"])["kind"] == "revision"
    assert alice_api.get(runs_url(campaign)).json()["results"][0]["id"] == run["id"]
    stored = OrchestrationRun.objects.get(public_id=run["id"])
    assert stored.steps.get(name=kind).instructions == "Mention the free refills."
    assert stored.steps.get(name="audit").instructions == ""
    log = events(alice_api, campaign)
    assert log[-2]["event"] == "orchestration.state_changed" and log[-2]["run_id"] == run["id"]
    # The instructions are the conversation's message to the agent (the hubs' ReceiveAgentMessage).
    assert log[-1]["event"] == "agent.message" and log[-1]["run_id"] == run["id"]
    assert log[-1]["data"] == {
        "agent": agent,
        "content": "Mention the free refills.",
        "sent_by": "alice",
        "run_id": run["id"],
    }


def test_revising_an_artifact_that_does_not_exist_yet_is_409(alice_api, campaign):
    RunFactory(campaign=campaign, state=RunState.FAILED, steps={"Copy": "failed"})
    before = database()

    body = assert_json_error(post(alice_api, revisions_url(campaign, "Copy"), {"instructions": "Shorter."}), 409)

    assert set(body) == {"detail"}
    assert database() == before


def test_revising_a_type_the_campaign_lacks_is_409(alice_api, campaign):
    run = RunFactory(campaign=campaign, state=RunState.FAILED, steps={"Copy": "completed"})
    ArtifactFactory(run=run, type="Copy")
    before = database()

    assert_json_error(post(alice_api, revisions_url(campaign, "ShortCopy"), {"instructions": "Shorter."}), 409)
    assert database() == before


@pytest.mark.parametrize("kind", ["Banner", "audit", "copy", "COPY", "Copy%00"])
def test_an_unknown_artifact_type_is_404(alice_api, campaign, generated, kind):
    before = database()

    body = assert_json_error(post(alice_api, revisions_url(campaign, kind), {"instructions": "Shorter."}), 404)

    assert set(body) == {"detail"}
    assert database() == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"instructions": ""},
        {"instructions": "   \n\t"},
        {"instructions": None},
        {"instructions": 42},
        {"instructions": ["Shorter."]},
        {"instructions": {"text": "Shorter."}},
        {"instructions": "Shorter\u0000please."},
        {"instructions": "x" * 5001},
        [],
    ],
    ids=repr,
)
def test_bad_instructions_are_400_and_start_nothing(alice_api, campaign, generated, body):
    before = database()

    response = post(alice_api, revisions_url(campaign, "Copy"), body)

    assert_json_error(response, 400)
    assert database() == before


def test_a_revision_while_another_run_is_active_is_409(alice_api, campaign, generated):
    post(alice_api, runs_url(campaign))
    before = database()

    body = assert_json_error(post(alice_api, revisions_url(campaign, "Copy"), {"instructions": "Shorter."}), 409)

    assert "active run" in body["detail"]
    assert database() == before


def test_a_revision_blocks_a_full_run_until_it_ends(alice_api, campaign, generated):
    assert post(alice_api, revisions_url(campaign, "Copy"), {"instructions": "Shorter."}).status_code == 202

    assert_json_error(post(alice_api, runs_url(campaign)), 409)
