"""The REST API (PROTOCOL.md §3) as a client sees it: status codes, JSON bodies and the stored rows."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from rest_framework.test import APIClient

from campaigns.models import Campaign
from campaigns.tests.factories import PASSWORD, ArtifactFactory, AuditFactory, CampaignFactory, RunFactory
from eventlog.publisher import publish
from orchestration.models import RunState

pytestmark = pytest.mark.django_db

CAMPAIGNS = "/api/campaigns/"
VALID = {"name": "Valid name", "brief": "Valid brief."}
ARTIFACT_FIELDS = {"id", "campaign_id", "run_id", "type", "content", "metadata", "created_at", "agent_name", "version"}
EVENT_FIELDS = {"event", "campaign_id", "run_id", "sequence", "emitted_at", "data"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def detail_url(campaign: Campaign) -> str:
    return f"{CAMPAIGNS}{campaign.public_id}/"


def post_json(client: APIClient, url: str, data: Any) -> Any:
    return client.post(url, data, format="json")


def patch_json(client: APIClient, url: str, data: Any) -> Any:
    return client.patch(url, data, format="json")


def call(client: APIClient, method: str, url: str, data: Any = None) -> Any:
    """A request; a JSON body only for the methods that take one."""
    if method in ("post", "patch", "put"):
        return getattr(client, method)(url, data, format="json")
    return getattr(client, method)(url)


def stored(campaign: Campaign) -> dict[str, Any]:
    """The editable columns of a campaign as they are in the database now."""
    return dict(
        Campaign.objects.filter(pk=campaign.pk).values("name", "brief", "audience", "tone", "settings", "updated_at")[0]
    )


def publish_progress(campaign: Campaign, times: int, run_id: str | None = None) -> None:
    for n in range(times):
        publish(campaign, "progress", {"percentage": 10 * (n + 1), "message": f"step {n + 1}"}, run_id=run_id)


@pytest.fixture
def campaign(alice) -> Campaign:
    return CampaignFactory(owner=alice, name="Alice's launch", settings={"max_tokens": 500})


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


# --- JWT -------------------------------------------------------------------------------------------


def test_token_pair_refresh_and_bearer_access(alice, campaign):
    client = APIClient()
    tokens = post_json(client, "/api/auth/token/", {"username": "alice", "password": PASSWORD})

    assert tokens.status_code == 200, tokens.content
    pair = tokens.json()
    assert set(pair) >= {"access", "refresh"}

    refreshed = post_json(client, "/api/auth/token/refresh/", {"refresh": pair["refresh"]})
    assert refreshed.status_code == 200
    assert "access" in refreshed.json()

    for access in (pair["access"], refreshed.json()["access"]):
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
        listing = client.get(CAMPAIGNS)
        assert listing.status_code == 200
        assert [c["id"] for c in listing.json()["results"]] == [campaign.public_id]


@pytest.mark.parametrize(
    "body",
    [{"username": "alice", "password": "wrong"}, {"username": "nobody", "password": PASSWORD}],
)
def test_bad_credentials_are_401(alice, body):
    response = post_json(APIClient(), "/api/auth/token/", body)

    assert response.status_code == 401
    assert response.json()["detail"]
    assert "access" not in response.json()


@pytest.mark.parametrize("body", [{}, {"username": "alice"}, {"password": PASSWORD}])
def test_token_request_without_fields_is_400(alice, body):
    response = post_json(APIClient(), "/api/auth/token/", body)

    assert response.status_code == 400
    missing = {"username", "password"} - set(body)
    assert missing <= set(response.json())


def test_refresh_with_garbage_is_401_and_without_token_is_400():
    client = APIClient()

    garbage = post_json(client, "/api/auth/token/refresh/", {"refresh": "not.a.token"})
    assert garbage.status_code == 401
    assert garbage.json()["detail"]

    missing = post_json(client, "/api/auth/token/refresh/", {})
    assert missing.status_code == 400
    assert "refresh" in missing.json()


def test_bad_bearer_token_is_401(campaign):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")

    response = client.get(CAMPAIGNS)

    assert response.status_code == 401
    assert response.json()["detail"]


def test_access_token_of_bob_does_not_open_alices_campaign(bob, campaign):
    client = APIClient()
    access = post_json(client, "/api/auth/token/", {"username": "bob", "password": PASSWORD}).json()["access"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")

    assert client.get(detail_url(campaign)).status_code == 404
    assert client.get(CAMPAIGNS).json()["count"] == 0


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


# --- Schema, docs, health --------------------------------------------------------------------------


def test_openapi_schema_lists_the_campaign_paths(alice_api):
    response = alice_api.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    assert {
        "/api/campaigns/",
        "/api/campaigns/{campaign_id}/",
        "/api/campaigns/{campaign_id}/artifacts/",
        "/api/campaigns/{campaign_id}/snapshot/",
        "/api/campaigns/{campaign_id}/events/",
        "/api/auth/token/",
        "/api/auth/token/refresh/",
    } <= paths
    assert {"get", "post"} <= set(schema["paths"]["/api/campaigns/"])
    assert {"get", "patch", "delete"} <= set(schema["paths"]["/api/campaigns/{campaign_id}/"])


def test_openapi_schema_default_is_yaml(alice_api):
    response = alice_api.get("/api/schema/")

    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")


ASSET_URL = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def test_docs_page_uses_only_local_assets(alice_api):
    response = alice_api.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "http://" not in html and "https://" not in html
    urls = ASSET_URL.findall(html)
    assert urls, html
    for url in urls:
        assert not re.match(r"^(https?:)?//", url, re.IGNORECASE), url
        assert url.startswith("/"), url
    static = [u for u in urls if u.startswith("/static/")]
    assert any(u.endswith(".js") for u in static) and any(u.endswith(".css") for u in static), urls
    assert all(u.startswith("/static/") or u.startswith("/api/docs/") for u in urls), urls


def test_docs_assets_are_served(alice_api):
    html = alice_api.get("/api/docs/").content.decode()

    for url in ASSET_URL.findall(html):
        response = alice_api.get(url)
        assert response.status_code == 200, url
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert body, url


# --- CORS ------------------------------------------------------------------------------------------

ALLOWED = "https://app.example.com"


@pytest.fixture
def cors(settings):
    settings.ALLOWED_ORIGINS = [ALLOWED]
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]
    return settings


def preflight(client: APIClient, origin: str, path: str = CAMPAIGNS) -> Any:
    return client.options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )


def test_cors_preflight_from_an_allowed_origin(cors, anon_api):
    response = preflight(anon_api, ALLOWED)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert response["Access-Control-Allow-Credentials"] == "true"
    allowed_headers = response["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "POST" in response["Access-Control-Allow-Methods"]


def test_cors_actual_request_from_an_allowed_origin(cors, alice_api, campaign):
    response = alice_api.get(CAMPAIGNS, HTTP_ORIGIN=ALLOWED)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert response["Access-Control-Allow-Credentials"] == "true"


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "http://app.example.com", "https://app.example.com.evil"]
)
def test_cors_refuses_other_origins(cors, anon_api, alice_api, origin):
    assert "Access-Control-Allow-Origin" not in preflight(anon_api, origin)
    assert "Access-Control-Allow-Origin" not in alice_api.get(CAMPAIGNS, HTTP_ORIGIN=origin)
