"""The event log and snapshot endpoints (realtime/api.py): pages of events, their shape, snapshots."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from campaigns.models import Campaign
from campaigns.tests.api import (
    ARTIFACT_FIELDS,
    EVENT_FIELDS,
    ISO_UTC,
    alices_campaign,
    detail_url,
    publish_progress,
)
from campaigns.tests.factories import ArtifactFactory, AuditFactory, CampaignFactory, RunFactory
from eventlog.publisher import publish
from orchestration.models import RunState

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign(alice) -> Campaign:
    return alices_campaign(alice)


# --- Events ----------------------------------------------------------------------------------------


def events_url(campaign: Campaign) -> str:
    return detail_url(campaign) + "events/"


def test_events_default_lists_everything_ascending(alice_api, campaign):
    publish_progress(campaign, 5)

    response = alice_api.get(events_url(campaign))

    assert response.status_code == 200
    page = response.json()
    assert page["count"] == 5
    assert page["next"] is None
    assert [e["sequence"] for e in page["results"]] == [1, 2, 3, 4, 5]
    assert [e["data"]["percentage"] for e in page["results"]] == [10, 20, 30, 40, 50]


def test_event_shape(alice_api, campaign):
    run = RunFactory(campaign=campaign, state=RunState.GENERATING)
    publish(campaign, "progress", {"percentage": 10, "message": "x"})
    publish(campaign, "progress", {"percentage": 20, "message": "y"}, run_id=run.public_id)

    first, second = alice_api.get(events_url(campaign)).json()["results"]

    assert set(first) == EVENT_FIELDS
    assert "type" not in first
    assert first["event"] == "progress"
    assert first["campaign_id"] == campaign.public_id
    assert first["run_id"] is None
    assert first["sequence"] == 1
    assert first["emitted_at"].endswith("Z") and ISO_UTC.match(first["emitted_at"])
    assert first["data"] == {"percentage": 10, "message": "x"}
    assert second["run_id"] == run.public_id


def test_events_after(alice_api, campaign):
    publish_progress(campaign, 5)

    page = alice_api.get(events_url(campaign), {"after": 3}).json()

    assert [e["sequence"] for e in page["results"]] == [4, 5]
    assert page["count"] == 2
    assert alice_api.get(events_url(campaign), {"after": 5}).json()["results"] == []
    assert alice_api.get(events_url(campaign), {"after": 999}).json()["results"] == []


@pytest.mark.parametrize(
    "query",
    ["after=", "limit=", "limit=+1", "limit=%201", "limit=%D9%A1", "limit=1_0", "after=1.0", "after=1.", "after=-1"],
)
def test_events_after_and_limit_must_be_plain_integers(alice_api, campaign, query):
    """What Python's int() would read ("+1", " 1", "1_0", an Arabic-Indic digit) is not an integer a
    client writes: a 400 naming the parameter, as the schema says."""
    publish_progress(campaign, 3)

    response = alice_api.get(f"{events_url(campaign)}?{query}")

    assert response.status_code == 400, response.json()
    assert list(response.json()) == [query.split("=")[0]]


def test_events_limit_and_next_link(alice_api, campaign):
    publish_progress(campaign, 5)

    page = alice_api.get(events_url(campaign), {"limit": 2}).json()
    seen = [e["sequence"] for e in page["results"]]
    assert seen == [1, 2]
    assert page["next"] is not None and "after=2" in page["next"] and "limit=2" in page["next"]

    while page["next"]:
        response = alice_api.get(page["next"])
        assert response.status_code == 200
        page = response.json()
        seen += [e["sequence"] for e in page["results"]]

    assert seen == [1, 2, 3, 4, 5]


def test_events_limit_of_exactly_1000_is_accepted(alice_api, campaign):
    publish_progress(campaign, 2)

    response = alice_api.get(events_url(campaign), {"limit": 1000})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 2


def test_events_of_another_campaign_are_not_listed(alice_api, campaign, alice):
    other = CampaignFactory(owner=alice)
    publish_progress(other, 3)
    publish_progress(campaign, 1)

    page = alice_api.get(events_url(campaign)).json()

    assert page["count"] == 1
    assert {e["campaign_id"] for e in page["results"]} == {campaign.public_id}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 1001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": -1}, "after"),
        ({"after": "abc"}, "after"),
        ({"after": "1.5"}, "after"),
    ],
)
def test_bad_event_query_is_400(alice_api, campaign, query, field):
    publish_progress(campaign, 1)

    response = alice_api.get(events_url(campaign), query)

    assert response.status_code == 400
    assert field in response.json()
    assert response.json()[field]


# --- Snapshot --------------------------------------------------------------------------------------


def snapshot_of(client: APIClient, campaign: Campaign) -> dict[str, Any]:
    response = client.get(detail_url(campaign) + "snapshot/")
    assert response.status_code == 200, response.content
    return response.json()


def test_snapshot_of_a_campaign_without_run(alice_api, campaign):
    snapshot = snapshot_of(alice_api, campaign)

    assert snapshot["campaign_id"] == campaign.public_id
    assert snapshot["run_id"] is None
    assert snapshot["current_state"] == "idle"
    assert snapshot["completed_artifacts"] == []
    assert snapshot["pending_artifacts"] == []
    assert snapshot["audit_status"] == "not_started"
    assert snapshot["last_event_sequence"] == 0
    assert snapshot["artifacts"] == []
    assert snapshot["compliance"] is None
    assert ISO_UTC.match(snapshot["timestamp"])


def test_snapshot_of_a_finished_run(alice_api, campaign):
    run = RunFactory(campaign=campaign, state=RunState.COMPLETED, steps="completed")
    for kind in ("Copy", "ShortCopy", "Visual"):
        ArtifactFactory(run=run, type=kind)
    issues = [{"artifact_type": "Visual", "issue_description": "Small print is too small.", "severity": "Low"}]
    audit = AuditFactory(run=run, score=88, issues=issues, feedback="Mostly fine.")
    publish_progress(campaign, 4, run_id=run.public_id)

    snapshot = snapshot_of(alice_api, campaign)

    assert snapshot["run_id"] == run.public_id
    assert snapshot["current_state"] == "completed"
    assert snapshot["completed_artifacts"] == ["Copy", "ShortCopy", "Visual"]
    assert snapshot["pending_artifacts"] == []
    assert snapshot["audit_status"] == "completed"
    assert snapshot["last_event_sequence"] == 4
    compliance = snapshot["compliance"]
    assert set(compliance) == {"is_compliant", "compliance_score", "issues", "feedback", "audited_at"}
    assert compliance["is_compliant"] is True
    assert compliance["compliance_score"] == 88
    assert compliance["issues"] == issues
    assert compliance["feedback"] == "Mostly fine."
    assert ISO_UTC.match(compliance["audited_at"])
    assert audit.run_id == run.pk
    assert [a["type"] for a in snapshot["artifacts"]] == ["Copy", "ShortCopy", "Visual"]
    for artifact in snapshot["artifacts"]:
        assert set(artifact) == ARTIFACT_FIELDS
        assert artifact["run_id"] == run.public_id
    # One shape everywhere: the snapshot's artifacts are the REST list's newest versions, field for field.
    rest = alice_api.get(detail_url(campaign) + "artifacts/").json()["results"]
    assert snapshot["artifacts"] == rest


def test_snapshot_of_a_run_in_progress(alice_api, campaign):
    run = RunFactory(campaign=campaign, state=RunState.GENERATING, steps={"Copy": "completed"})
    copy = ArtifactFactory(run=run, type="Copy")
    publish_progress(campaign, 2, run_id=run.public_id)

    snapshot = snapshot_of(alice_api, campaign)

    assert snapshot["run_id"] == run.public_id
    assert snapshot["current_state"] == "generating"
    assert snapshot["completed_artifacts"] == ["Copy"]
    assert snapshot["pending_artifacts"] == ["ShortCopy", "Visual"]
    assert snapshot["audit_status"] == "not_started"
    assert snapshot["compliance"] is None
    assert [a["id"] for a in snapshot["artifacts"]] == [copy.public_id]
    assert snapshot["last_event_sequence"] == 2


def test_snapshot_while_auditing(alice_api, campaign):
    steps = {"Copy": "completed", "ShortCopy": "completed", "Visual": "completed", "audit": "running"}
    RunFactory(campaign=campaign, state=RunState.AUDITING, steps=steps)

    snapshot = snapshot_of(alice_api, campaign)

    assert snapshot["current_state"] == "auditing"
    assert snapshot["audit_status"] == "in_progress"
    assert snapshot["pending_artifacts"] == []


def test_snapshot_sequence_matches_the_event_log(alice_api, campaign):
    publish_progress(campaign, 3)

    snapshot = snapshot_of(alice_api, campaign)
    events = alice_api.get(events_url(campaign), {"after": snapshot["last_event_sequence"]}).json()

    assert snapshot["last_event_sequence"] == 3
    assert events["results"] == []
