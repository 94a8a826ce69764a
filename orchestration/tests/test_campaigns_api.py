"""The campaign REST API (orchestration/api.py, PROTOCOL.md §3) as a client sees it: status codes,
JSON bodies and the stored rows; who sees what; bad input of every kind.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from campaigns.models import Campaign
from campaigns.tests.api import (
    CAMPAIGNS,
    ISO_UTC,
    VALID,
    call,
    detail_url,
    patch_json,
    post_json,
    stored,
)
from campaigns.tests.factories import CampaignFactory, RunFactory
from orchestration.models import RunState

pytestmark = pytest.mark.django_db


# --- Campaign CRUD ---------------------------------------------------------------------------------


def test_owner_creates_a_campaign(alice_api, alice):
    body = {
        "name": "Spring launch",
        "brief": "Sell the bottle.",
        "audience": "commuters",
        "tone": "friendly",
        "settings": {"require_approval": True, "max_tokens": 800},
    }
    response = post_json(alice_api, CAMPAIGNS, body)

    assert response.status_code == 201, response.content
    data = response.json()
    assert data["id"].startswith("camp_")
    assert re.fullmatch(r"camp_[A-Za-z0-9_-]+", data["id"])
    assert {k: data[k] for k in body} == body
    assert data["owner"] == "alice"
    assert data["state"] == "idle"
    assert data["latest_run_id"] is None
    assert data["last_sequence"] == 0
    assert ISO_UTC.match(data["created_at"]) and ISO_UTC.match(data["updated_at"])
    stored_campaign = Campaign.objects.get(public_id=data["id"])
    assert stored_campaign.owner == alice
    assert stored_campaign.settings == body["settings"]


def test_create_accepts_every_documented_setting(alice_api, settings):
    settings.ORCHESTRATION_SIMULATION = True  # a test or demo server
    documented = {
        "require_approval": False,
        "max_tokens": 4000,
        "max_cost": 0.25,
        "simulate": {"Copy": {"fail_times": 2, "delay_ms": 10}, "audit": {"fail_permanently": True}},
    }

    response = post_json(alice_api, CAMPAIGNS, {**VALID, "settings": documented})

    assert response.status_code == 201, response.content
    assert response.json()["settings"] == documented
    assert Campaign.objects.get().settings == documented


def test_create_needs_only_name_and_brief(alice_api):
    response = post_json(alice_api, CAMPAIGNS, {"name": "Minimal", "brief": "Just a brief."})

    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["audience"], data["tone"], data["settings"]) == ("", "", {})


def test_read_only_fields_in_the_body_are_ignored(alice_api, alice, bob):
    response = post_json(
        alice_api,
        CAMPAIGNS,
        {"name": "Mine", "brief": "b", "owner": "bob", "id": "camp_chosen", "state": "completed", "last_sequence": 9},
    )

    assert response.status_code == 201, response.content
    data = response.json()
    assert data["owner"] == "alice" and data["id"] != "camp_chosen"
    assert data["state"] == "idle" and data["last_sequence"] == 0
    assert Campaign.objects.get(public_id=data["id"]).owner == alice
    assert not Campaign.objects.filter(owner=bob).exists()


def test_list_is_paginated_newest_first(alice_api, alice):
    created = [CampaignFactory(owner=alice) for _ in range(3)]

    first = alice_api.get(CAMPAIGNS, {"page_size": 2})

    assert first.status_code == 200
    page = first.json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 3
    assert page["previous"] is None
    assert page["next"] is not None
    assert [c["id"] for c in page["results"]] == [created[2].public_id, created[1].public_id]

    second = alice_api.get(page["next"]).json()
    assert [c["id"] for c in second["results"]] == [created[0].public_id]
    assert second["next"] is None
    assert second["previous"] is not None


def test_list_shows_the_latest_run_state(alice_api, campaign):
    run = RunFactory(campaign=campaign, state=RunState.GENERATING)

    [item] = alice_api.get(CAMPAIGNS).json()["results"]

    assert item["id"] == campaign.public_id
    assert item["state"] == "generating"
    assert item["latest_run_id"] == run.public_id


def test_owner_retrieves_a_campaign(alice_api, campaign):
    response = alice_api.get(detail_url(campaign))

    assert response.status_code == 200
    data = response.json()
    assert data["id"] == campaign.public_id
    assert data["name"] == "Alice's launch"
    assert data["brief"] == campaign.brief
    assert data["settings"] == {"max_tokens": 500}
    assert data["owner"] == "alice"
    assert data["state"] == "idle"


def test_owner_patches_a_campaign(alice_api, campaign):
    response = patch_json(alice_api, detail_url(campaign), {"name": "Renamed", "settings": {"require_approval": False}})

    assert response.status_code == 200, response.content
    data = response.json()
    assert data["name"] == "Renamed"
    assert data["settings"] == {"require_approval": False}
    assert data["brief"] == campaign.brief
    campaign.refresh_from_db()
    assert campaign.name == "Renamed"
    assert campaign.settings == {"require_approval": False}


def test_put_is_not_offered(alice_api, campaign):
    response = alice_api.put(detail_url(campaign), {"name": "x", "brief": "y"}, format="json")

    assert response.status_code == 405
    assert "detail" in response.json()


def test_owner_deletes_a_campaign(alice_api, campaign):
    RunFactory(campaign=campaign, state=RunState.COMPLETED)

    response = alice_api.delete(detail_url(campaign))

    assert response.status_code == 204
    assert not Campaign.objects.filter(pk=campaign.pk).exists()
    assert alice_api.get(detail_url(campaign)).status_code == 404


def test_deleting_a_campaign_with_an_active_run_is_409(alice_api, campaign):
    RunFactory(campaign=campaign, state=RunState.GENERATING)

    response = alice_api.delete(detail_url(campaign))

    assert response.status_code == 409
    assert "active run" in response.json()["detail"]
    assert Campaign.objects.filter(pk=campaign.pk).exists()
    assert campaign.runs.count() == 1


# --- Who sees what ---------------------------------------------------------------------------------


def test_another_user_lists_none_of_alices_campaigns(bob_api, campaign):
    page = bob_api.get(CAMPAIGNS).json()

    assert page["count"] == 0
    assert page["results"] == []


@pytest.mark.parametrize("suffix", ["", "artifacts/", "snapshot/", "events/"])
def test_another_user_gets_404_reading_alices_campaign(bob_api, campaign, suffix):
    response = bob_api.get(detail_url(campaign) + suffix)

    assert response.status_code == 404
    assert response.json() == {"detail": "Campaign not found."}


def test_another_user_gets_404_patching_alices_campaign(bob_api, campaign):
    before = stored(campaign)

    response = patch_json(bob_api, detail_url(campaign), {"name": "Hijacked"})

    assert response.status_code == 404
    assert "detail" in response.json()
    assert stored(campaign) == before


@pytest.mark.parametrize("run_state", [None, RunState.GENERATING])
def test_another_user_gets_404_deleting_alices_campaign(bob_api, campaign, run_state):
    # Even with an active run the answer is 404, not 409: a 409 would reveal that the campaign exists.
    if run_state:
        RunFactory(campaign=campaign, state=run_state)

    response = bob_api.delete(detail_url(campaign))

    assert response.status_code == 404
    assert "detail" in response.json()
    assert Campaign.objects.filter(pk=campaign.pk).exists()


def test_staff_sees_every_campaign(operator_api, alice, bob):
    mine = CampaignFactory(owner=alice)
    theirs = CampaignFactory(owner=bob)

    page = operator_api.get(CAMPAIGNS).json()

    assert page["count"] == 2
    assert {c["id"] for c in page["results"]} == {mine.public_id, theirs.public_id}
    for suffix in ("", "artifacts/", "snapshot/", "events/"):
        assert operator_api.get(detail_url(mine) + suffix).status_code == 200


def test_staff_creates_campaigns_in_their_own_name(operator_api, operator):
    response = post_json(operator_api, CAMPAIGNS, {"name": "Ops", "brief": "b"})

    assert response.status_code == 201
    assert response.json()["owner"] == "charlie"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("post", ""),
        ("get", "{id}/"),
        ("patch", "{id}/"),
        ("delete", "{id}/"),
        ("get", "{id}/artifacts/"),
        ("get", "{id}/snapshot/"),
        ("get", "{id}/events/"),
        ("get", "camp_unknown/"),
    ],
)
def test_anonymous_gets_401_everywhere(anon_api, campaign, method, suffix):
    before = stored(campaign)
    url = CAMPAIGNS + suffix.format(id=campaign.public_id)

    response = call(anon_api, method, url, {"name": "x", "brief": "y"})

    assert response.status_code == 401
    assert "detail" in response.json()
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert Campaign.objects.count() == 1
    assert stored(campaign) == before


# --- Bad input -------------------------------------------------------------------------------------

BAD_CREATE_BODIES = [
    pytest.param({"brief": "b"}, "name", id="missing-name"),
    pytest.param({"name": "n"}, "brief", id="missing-brief"),
    pytest.param({}, "name", id="empty-body"),
    pytest.param({**VALID, "name": 42}, "name", id="name-number"),
    pytest.param({**VALID, "name": True}, "name", id="name-bool"),
    pytest.param({**VALID, "name": None}, "name", id="name-null"),
    pytest.param({**VALID, "brief": ["a", "b"]}, "brief", id="brief-list"),
    pytest.param({**VALID, "brief": {"a": 1}}, "brief", id="brief-object"),
    pytest.param({**VALID, "audience": 7}, "audience", id="audience-number"),
    pytest.param({**VALID, "tone": ["x"]}, "tone", id="tone-list"),
    pytest.param({**VALID, "name": ""}, "name", id="blank-name"),
    pytest.param({**VALID, "name": "   "}, "name", id="whitespace-name"),
    pytest.param({**VALID, "brief": ""}, "brief", id="blank-brief"),
    pytest.param({**VALID, "name": "n" * 201}, "name", id="name-201-chars"),
    pytest.param({**VALID, "brief": "b" * 20_001}, "brief", id="brief-20001-chars"),
    pytest.param({**VALID, "audience": "a" * 1_001}, "audience", id="audience-too-long"),
    pytest.param({**VALID, "tone": "t" * 101}, "tone", id="tone-too-long"),
    pytest.param({**VALID, "settings": ["require_approval"]}, "settings", id="settings-list"),
    pytest.param({**VALID, "settings": "require_approval"}, "settings", id="settings-string"),
    pytest.param({**VALID, "settings": None}, "settings", id="settings-null"),
    pytest.param({**VALID, "settings": {"require_approval": "yes"}}, "settings", id="require-approval-string"),
    pytest.param({**VALID, "settings": {"max_tokens": -1}}, "settings", id="max-tokens-negative"),
    pytest.param({**VALID, "settings": {"max_tokens": 0}}, "settings", id="max-tokens-zero"),
    pytest.param({**VALID, "settings": {"max_tokens": True}}, "settings", id="max-tokens-bool"),
    pytest.param({**VALID, "settings": {"max_tokens": "100"}}, "settings", id="max-tokens-string"),
    pytest.param({**VALID, "settings": {"max_cost": -0.5}}, "settings", id="max-cost-negative"),
    pytest.param({**VALID, "settings": {"colour": "blue"}}, "settings", id="unknown-settings-key"),
    pytest.param({**VALID, "settings": {"strategy": "random"}}, "settings", id="strategy-unknown"),
    pytest.param({**VALID, "settings": {"strategy": ["sequential"]}}, "settings", id="strategy-list"),
    pytest.param({**VALID, "settings": {"simulate": {"Logo": {"fail_times": 1}}}}, "settings", id="simulate-bad-step"),
    pytest.param({**VALID, "settings": {"simulate": {"Copy": {"fail_times": 99}}}}, "settings", id="simulate-range"),
    pytest.param({**VALID, "settings": {"simulate": {"Copy": {"explode": 1}}}}, "settings", id="simulate-bad-key"),
    pytest.param({**VALID, "settings": {"simulate": "Copy"}}, "settings", id="simulate-string"),
    pytest.param({**VALID, "settings": {"simulate": {"Copy": 3}}}, "settings", id="simulate-step-not-object"),
    pytest.param(
        {**VALID, "settings": {"simulate": {"audit": {"fail_permanently": "yes"}}}}, "settings", id="fail-permanently"
    ),
    pytest.param({**VALID, "settings": {"max_cost": 1, "pad": "x" * 17_000}}, "settings", id="settings-over-16kb"),
]


def _messages(body: dict[str, Any], field: str) -> str:
    value = body[field]
    return " ".join(value) if isinstance(value, list) else str(value)


@pytest.mark.parametrize(("body", "field"), BAD_CREATE_BODIES)
def test_bad_create_is_400_and_stores_nothing(alice_api, campaign, body, field, settings):
    settings.ORCHESTRATION_SIMULATION = True  # so a bad simulate is refused for its shape
    response = post_json(alice_api, CAMPAIGNS, body)

    assert response.status_code == 400, response.content
    errors = response.json()
    assert field in errors, errors
    assert _messages(errors, field).strip()
    assert Campaign.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({**VALID, "name": 42}, "name", "not a valid string"),
        ({**VALID, "name": "n" * 201}, "name", "200"),
        ({**VALID, "brief": "b" * 20_001}, "brief", "20000"),
        ({**VALID, "settings": ["x"]}, "settings", "json object"),
        ({**VALID, "settings": {"require_approval": "yes"}}, "settings", "require_approval"),
        ({**VALID, "settings": {"max_tokens": -3}}, "settings", "max_tokens"),
        ({**VALID, "settings": {"colour": "blue"}}, "settings", "colour"),
        ({**VALID, "settings": {"strategy": "Sequential"}}, "settings", '"parallel" or "sequential"'),
        ({**VALID, "settings": {"simulate": {"Logo": {}}}}, "settings", "logo"),
        ({**VALID, "settings": {"pad": "x" * 17_000}}, "settings", "16 kb"),
    ],
)
def test_bad_create_messages_name_the_problem(alice_api, body, field, words, settings):
    settings.ORCHESTRATION_SIMULATION = True  # so a bad simulate is refused for its shape
    response = post_json(alice_api, CAMPAIGNS, body)

    assert response.status_code == 400
    assert words in _messages(response.json(), field).lower().replace(",", "")
    assert Campaign.objects.count() == 0


def test_settings_of_exactly_the_limits_are_accepted(alice_api):
    body = {**VALID, "name": "n" * 200, "brief": "b" * 20_000, "settings": {"max_tokens": 1, "max_cost": 0}}

    response = post_json(alice_api, CAMPAIGNS, body)

    assert response.status_code == 201, response.content
    assert Campaign.objects.get().name == "n" * 200


SIMULATE = {"simulate": {"Copy": {"delay_ms": 600_000}, "audit": {"fail_permanently": True}}}


def test_simulate_is_refused_where_the_server_does_not_enable_it(alice_api, settings):
    settings.ORCHESTRATION_SIMULATION = False  # the default

    response = post_json(alice_api, CAMPAIGNS, {**VALID, "settings": SIMULATE})

    assert response.status_code == 400, response.content
    [message] = response.json()["settings"]
    assert message.startswith("simulate is disabled on this server")
    assert "ORCHESTRATION_SIMULATION" in message
    assert Campaign.objects.count() == 0


@pytest.mark.parametrize("simulate", [SIMULATE["simulate"], {}, {"Copy": {"fail_times": 99}}])
def test_a_patch_with_simulate_is_refused_where_the_server_does_not_enable_it(alice_api, campaign, settings, simulate):
    settings.ORCHESTRATION_SIMULATION = False
    before = stored(campaign)

    response = patch_json(alice_api, detail_url(campaign), {"name": "Renamed", "settings": {"simulate": simulate}})

    assert response.status_code == 400, response.content
    assert list(response.json()) == ["settings"]
    assert "simulate is disabled on this server" in response.json()["settings"][0]
    assert stored(campaign) == before


BAD_PATCH_BODIES = [
    pytest.param({param.values[1]: param.values[0][param.values[1]]}, param.values[1], id=param.id)
    for param in BAD_CREATE_BODIES
    if param.values[1] in param.values[0]
]


@pytest.mark.parametrize(("body", "field"), BAD_PATCH_BODIES)
def test_bad_patch_is_400_and_changes_nothing(alice_api, campaign, body, field, settings):
    settings.ORCHESTRATION_SIMULATION = True  # so a bad simulate is refused for its shape
    before = stored(campaign)

    response = patch_json(alice_api, detail_url(campaign), body)

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert stored(campaign) == before


def test_bad_patch_with_one_good_field_changes_nothing(alice_api, campaign):
    before = stored(campaign)

    response = patch_json(alice_api, detail_url(campaign), {"name": "Fine", "settings": {"max_tokens": -1}})

    assert response.status_code == 400
    assert stored(campaign) == before


@pytest.mark.parametrize("method", ["post", "patch"])
@pytest.mark.parametrize("raw", [b'{"name": "x", "brief": ', b"not json", b"\xff\xfe", b'{"name": NaN}'])
def test_malformed_json_is_400(alice_api, campaign, method, raw):
    before = stored(campaign)
    url = CAMPAIGNS if method == "post" else detail_url(campaign)

    response = getattr(alice_api, method)(url, data=raw, content_type="application/json")

    assert response.status_code == 400, response.content
    assert "detail" in response.json()
    assert Campaign.objects.count() == 1
    assert stored(campaign) == before


def test_a_json_array_body_is_400(alice_api):
    response = alice_api.post(CAMPAIGNS, data=b"[1, 2]", content_type="application/json")

    assert response.status_code == 400
    assert response.json()
    assert Campaign.objects.count() == 0


def test_form_encoded_body_is_415(alice_api):
    response = alice_api.post(CAMPAIGNS, {"name": "x", "brief": "y"})

    assert response.status_code == 415
    assert "detail" in response.json()
    assert Campaign.objects.count() == 0


# Every request that names one campaign in its URL.
CAMPAIGN_REQUESTS = [
    ("get", ""),
    ("patch", ""),
    ("delete", ""),
    ("get", "artifacts/"),
    ("get", "snapshot/"),
    ("get", "events/"),
]


@pytest.mark.parametrize(("method", "suffix"), CAMPAIGN_REQUESTS)
def test_unknown_campaign_id_is_404(alice_api, campaign, method, suffix):
    before = stored(campaign)

    response = call(alice_api, method, f"{CAMPAIGNS}camp_doesnotexist/{suffix}", {"name": "x"})

    assert response.status_code == 404
    assert response.json() == {"detail": "Campaign not found."}
    assert stored(campaign) == before


@pytest.mark.parametrize("path", ["/api/nothing-here/", "/api/nothing-here", "/api/campaigns/x/y/z/"])
def test_unknown_url_under_api_is_json_404(alice_api, path):
    response = alice_api.get(path)

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize(("method", "suffix"), CAMPAIGN_REQUESTS)
def test_campaign_id_with_a_nul_character_is_404_not_500(alice_api, campaign, method, suffix):
    before = stored(campaign)

    response = call(alice_api, method, f"{CAMPAIGNS}%00/{suffix}", {"name": "x"})

    assert response.status_code == 404, response.content
    assert "detail" in response.json()
    assert stored(campaign) == before


@pytest.mark.parametrize("method", ["post", "patch"])
def test_body_over_the_upload_limit_is_refused_without_500(alice_api, campaign, settings, method):
    before = stored(campaign)
    body = json.dumps({"name": "Big", "brief": "b" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}).encode()
    url = CAMPAIGNS if method == "post" else detail_url(campaign)

    response = getattr(alice_api, method)(url, data=body, content_type="application/json")

    assert response.status_code == 413, response.content
    assert response.json()["detail"]
    assert Campaign.objects.count() == 1
    assert stored(campaign) == before


def test_unknown_url_outside_api_is_an_html_404(alice_api):
    response = alice_api.get("/nothing-here/")

    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")
