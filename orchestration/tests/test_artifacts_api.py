"""The artifacts endpoint (orchestration/api.py): versions, order, shape, filters."""

from __future__ import annotations

import pytest

from campaigns.tests.api import (
    ARTIFACT_FIELDS,
    ISO_UTC,
    detail_url,
)
from campaigns.tests.factories import ArtifactFactory, CampaignFactory, RunFactory
from orchestration.models import RunState

pytestmark = pytest.mark.django_db


# --- Artifacts -------------------------------------------------------------------------------------


@pytest.fixture
def artifacts(campaign):
    first = RunFactory(campaign=campaign, state=RunState.COMPLETED)
    revision = RunFactory(campaign=campaign, state=RunState.COMPLETED, kind="revision")
    return {
        "copy1": ArtifactFactory(run=first, type="Copy", version=1, content="Copy one"),
        "short1": ArtifactFactory(run=first, type="ShortCopy", version=1, agent_name="short_copywriter"),
        "visual1": ArtifactFactory(
            run=first, type="Visual", version=1, agent_name="visual_designer", metadata={"format": "svg"}
        ),
        "copy2": ArtifactFactory(run=revision, type="Copy", version=2, content="Copy two"),
    }


def test_artifacts_list_newest_version_of_each_type_first(alice_api, campaign, artifacts):
    response = alice_api.get(detail_url(campaign) + "artifacts/")

    assert response.status_code == 200
    page = response.json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 4
    assert [(a["type"], a["version"]) for a in page["results"]] == [
        ("Copy", 2),
        ("ShortCopy", 1),
        ("Visual", 1),
        ("Copy", 1),
    ]


def test_artifact_shape(alice_api, campaign, artifacts):
    results = alice_api.get(detail_url(campaign) + "artifacts/").json()["results"]
    visual = artifacts["visual1"]

    [item] = [a for a in results if a["type"] == "Visual"]
    assert set(item) == ARTIFACT_FIELDS
    assert item["id"] == visual.public_id and item["id"].startswith("art_")
    assert item["campaign_id"] == campaign.public_id
    assert item["run_id"] == visual.run.public_id
    assert item["content"] == visual.content
    assert item["metadata"] == {"format": "svg"}
    assert item["agent_name"] == "visual_designer"
    assert item["version"] == 1
    assert ISO_UTC.match(item["created_at"])


def test_artifacts_filtered_by_type(alice_api, campaign, artifacts):
    response = alice_api.get(detail_url(campaign) + "artifacts/", {"type": "Copy"})

    assert response.status_code == 200
    assert [(a["type"], a["version"], a["content"]) for a in response.json()["results"]] == [
        ("Copy", 2, "Copy two"),
        ("Copy", 1, "Copy one"),
    ]


@pytest.mark.parametrize("value", ["Bogus", "copy", ""])
def test_unknown_artifact_type_is_400(alice_api, campaign, artifacts, value):
    response = alice_api.get(detail_url(campaign) + "artifacts/", {"type": value})

    assert response.status_code == 400
    assert "type" in response.json()
    assert "Copy" in " ".join(response.json()["type"])


def test_artifacts_of_other_campaigns_are_not_listed(alice_api, campaign, artifacts, alice):
    ArtifactFactory(run=RunFactory(campaign=CampaignFactory(owner=alice), state=RunState.COMPLETED))

    assert alice_api.get(detail_url(campaign) + "artifacts/").json()["count"] == 4
