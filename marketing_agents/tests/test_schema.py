"""The OpenAPI schema against real answers, one disagreement of issue 11 (item 5) at a time.

Each test makes a real request through the project's Django application and has schemathesis
validate the answer against `/api/schema/` as the server serves it, with every check: the status
must be documented for the operation, the body must match the documented schema and documented
headers must be there. Where the schema constrains an input, the server must agree: what the schema
refuses the server refuses (400) and what it allows the server accepts.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from rest_framework_simplejwt.tokens import AccessToken
from schemathesis.checks import not_a_server_error

from campaigns.models import Campaign
from campaigns.tests.factories import PASSWORD, ArtifactFactory, CampaignFactory, RunFactory
from eventlog.publisher import publish
from eventlog.reads import EVENTS_MAX_LIMIT
from orchestration.models import OrchestrationRun, RunState

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    """`/api/schema/` as the application serves it; cases are sent to the same application.

    As Django's own test client does, the request signals do not close the test's database
    connection (its transaction holds the test's rows)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def document(api) -> dict[str, Any]:
    return api.raw_schema


def bearer(user) -> dict[str, str]:
    return {"Authorization": f"Bearer {AccessToken.for_user(user)}"}


def send(api, method: str, path: str, *, outage: bool = False, **case: Any):
    """One request, validated with every schemathesis check; returns the answer. During an outage
    the 503 is the expected answer, so only the check that no answer is a 5xx is left out."""
    excluded = [not_a_server_error] if outage else []
    return api[path][method].Case(**case).call_and_validate(excluded_checks=excluded)


def component(document: dict[str, Any], name: str) -> jsonschema.Draft4Validator:
    """A validator for a component (OpenAPI 3.0 schemas are JSON Schema draft 4 plus `nullable`)."""
    return jsonschema.Draft4Validator({"$ref": f"#/components/schemas/{name}", "components": document["components"]})


@pytest.fixture
def campaign(alice) -> Campaign:
    return CampaignFactory(owner=alice)


def decide(api, user, run, approval, body):
    """POST a decision on a run's approval, as ``user``."""
    ids = {"run_id": run.public_id, "approval_id": approval.public_id}
    path = "/api/runs/{run_id}/approvals/{approval_id}/"
    return send(api, "POST", path, path_parameters=ids, body=body, headers=bearer(user))


def awaiting_approval(campaign: Campaign) -> tuple[OrchestrationRun, Any]:
    """A run whose artifacts are generated and which waits for a person to approve them."""
    run = RunFactory(campaign=campaign, state=RunState.AWAITING_APPROVAL, steps="completed")
    return run, run.approvals.create(step="generation", reason="Review the artifacts.")


# --- Nullable fields ------------------------------------------------------------------------------


def test_a_campaign_that_never_ran_answers_as_the_schema_says(api, alice):
    created = send(api, "POST", "/api/campaigns/", body={"name": "New", "brief": "Never ran."}, headers=bearer(alice))

    assert created.status_code == 201
    assert created.json()["latest_run_id"] is None
    campaign_id = created.json()["id"]
    assert (
        send(
            api,
            "GET",
            "/api/campaigns/{campaign_id}/",
            path_parameters={"campaign_id": campaign_id},
            headers=bearer(alice),
        ).status_code
        == 200
    )
    assert send(api, "GET", "/api/campaigns/", headers=bearer(alice)).json()["count"] == 1


def test_a_run_answers_as_the_schema_says_before_and_after_it_did_anything(api, alice, campaign):
    started = send(
        api,
        "POST",
        "/api/campaigns/{campaign_id}/runs/",
        path_parameters={"campaign_id": campaign.public_id},
        headers=bearer(alice),
    )
    assert started.status_code == 202
    assert started.json()["started_at"] is None and started.json()["steps"][0]["duration_ms"] is None

    listing = send(
        api,
        "GET",
        "/api/campaigns/{campaign_id}/runs/",
        path_parameters={"campaign_id": campaign.public_id},
        headers=bearer(alice),
    )
    assert listing.json()["count"] == 1


def test_events_and_artifacts_answer_as_the_schema_says(api, alice, campaign):
    run = RunFactory(campaign=campaign, state=RunState.COMPLETED, steps="completed")
    ArtifactFactory(run=run, type="Copy")
    publish(campaign, "progress", {"percentage": 40, "message": "Copy written."}, run_id=run.public_id)
    publish(campaign, "system.check", {})
    ids = {"campaign_id": campaign.public_id}

    events = send(
        api,
        "GET",
        "/api/campaigns/{campaign_id}/events/",
        path_parameters=ids,
        query={"limit": 1},
        headers=bearer(alice),
    )
    assert events.json()["count"] == 2 and events.json()["next"] is not None
    assert events.json()["results"][0]["sequence"] == 1
    last = send(
        api,
        "GET",
        "/api/campaigns/{campaign_id}/events/",
        path_parameters=ids,
        query={"after": 1},
        headers=bearer(alice),
    )
    assert last.json()["results"][0]["run_id"] is None and last.json()["next"] is None
    artifacts = send(api, "GET", "/api/campaigns/{campaign_id}/artifacts/", path_parameters=ids, headers=bearer(alice))
    assert artifacts.json()["count"] == 1


# --- Error answers: documented, in the one shape -------------------------------------------------


def test_a_refused_body_is_a_documented_400_naming_the_field(api, alice):
    response = send(api, "POST", "/api/campaigns/", body={"name": "", "brief": "x"}, headers=bearer(alice))

    assert response.status_code == 400
    assert response.json() == {"name": ["This field may not be blank."]}


def test_a_query_out_of_bounds_is_a_documented_400_naming_the_parameter(api, alice, campaign):
    ids = {"campaign_id": campaign.public_id}
    response = send(
        api,
        "GET",
        "/api/campaigns/{campaign_id}/events/",
        path_parameters=ids,
        query={"limit": 0},
        headers=bearer(alice),
    )

    assert response.status_code == 400
    assert list(response.json()) == ["limit"]


def test_a_request_for_a_host_the_server_does_not_serve_is_a_documented_400(api, alice):
    ids = {"run_id": "run_nope"}

    response = send(
        api, "GET", "/api/runs/{run_id}/", path_parameters=ids, headers={**bearer(alice), "Host": "evil.test"}
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "The request was malformed."}


def test_no_credentials_is_a_documented_401(api):
    response = send(api, "GET", "/api/campaigns/")

    assert response.status_code == 401
    assert response.json()["detail"]


def test_bad_credentials_are_a_documented_401(api, alice):
    response = send(api, "POST", "/api/auth/token/", body={"username": "alice", "password": PASSWORD + "!"})

    assert response.status_code == 401


def test_a_staff_only_operation_is_a_documented_403(api, alice):
    response = send(api, "POST", "/api/notices/", body={"level": "info", "message": "Hi"}, headers=bearer(alice))

    assert response.status_code == 403


def test_a_session_write_without_its_csrf_token_is_a_documented_403(api, alice):
    client = Client()
    client.force_login(alice)
    cookies = {"sessionid": client.cookies["sessionid"].value}

    response = send(api, "POST", "/api/campaigns/", body={"name": "x", "brief": "y"}, cookies=cookies)

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert Campaign.objects.count() == 0


def test_an_unknown_id_and_a_page_past_the_last_are_documented_404s(api, alice):
    run = send(api, "GET", "/api/runs/{run_id}/", path_parameters={"run_id": "run_nope"}, headers=bearer(alice))
    page = send(api, "GET", "/api/campaigns/", query={"page": 2}, headers=bearer(alice))

    assert (run.status_code, page.status_code) == (404, 404)


def test_a_refused_state_change_is_a_documented_409(api, alice, campaign):
    RunFactory(campaign=campaign, state=RunState.GENERATING)

    ids = {"campaign_id": campaign.public_id}
    started = send(api, "POST", "/api/campaigns/{campaign_id}/runs/", path_parameters=ids, headers=bearer(alice))
    deleted = send(api, "DELETE", "/api/campaigns/{campaign_id}/", path_parameters=ids, headers=bearer(alice))

    assert (started.status_code, deleted.status_code) == (409, 409)


def test_a_decided_approval_is_a_documented_409(api, alice, campaign):
    run = RunFactory(campaign=campaign, state=RunState.COMPLETED, steps="completed")
    approval = run.approvals.create(step="generation", state="approved")

    response = decide(api, alice, run, approval, {"decision": "approve"})

    assert response.status_code == 409


def test_a_body_over_the_limit_is_a_documented_413(api, alice, campaign, settings):
    body = {"brief": "b" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}
    ids = {"campaign_id": campaign.public_id}

    response = send(
        api, "PATCH", "/api/campaigns/{campaign_id}/", path_parameters=ids, body=body, headers=bearer(alice)
    )

    assert response.status_code == 413


def test_a_body_that_is_not_json_is_a_documented_415(api, alice):
    response = send(
        api, "POST", "/api/campaigns/", body="name=x&brief=y", media_type="text/plain", headers=bearer(alice)
    )

    assert response.status_code == 415
    assert Campaign.objects.count() == 0


def test_an_outage_is_a_documented_503_with_retry_after(api, alice, campaign, broker_down):
    ids = {"campaign_id": campaign.public_id}

    response = send(
        api, "POST", "/api/campaigns/{campaign_id}/runs/", path_parameters=ids, headers=bearer(alice), outage=True
    )

    assert response.status_code == 503
    assert response.headers["retry-after"] == ["5"]


def test_every_operation_documents_the_errors_it_can_give(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            assert "503" in statuses and operation["responses"]["503"]["headers"]["Retry-After"]["required"]
            if operation.get("security"):
                assert "401" in statuses, (method, path)
            if "{" in path:
                assert "404" in statuses, (method, path)
            assert "400" in statuses, (method, path)  # a malformed request, at least
            if "requestBody" in operation:
                assert {"413", "415"} <= statuses, (method, path)
            for status in statuses - {"200", "201", "202", "204"}:
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema["$ref"] in ("#/components/schemas/Error", "#/components/schemas/ValidationError")
            # A login lockout or the rate limit answers 429 with Retry-After, where a password is checked
            # or credentials are needed; a method the schema does not list is 405 with Allow.
            assert "405" not in statuses
            if path == "/api/auth/token/" or operation.get("security"):
                assert operation["responses"]["429"]["headers"]["Retry-After"]["required"], (method, path)
            else:
                assert "429" not in statuses, (method, path)


# --- Inputs: what the schema refuses, the server refuses --------------------------------------------


def integer_query_parameters(document: dict[str, Any]):
    for path, item in document["paths"].items():
        for parameter in item.get("get", {}).get("parameters", []):
            if parameter["in"] == "query" and parameter["schema"].get("type") == "integer":
                yield path, parameter


def test_every_integer_query_parameter_has_the_bounds_the_server_enforces(api, document, alice, campaign, settings):
    from webhooks.services import webhook_create

    settings.WEBHOOKS_ALLOW_PRIVATE = True
    webhook = webhook_create(user_id=alice.pk, url="http://127.0.0.1/h", events=["progress"])
    seen = set()
    for path, parameter in integer_query_parameters(document):
        name, schema = parameter["name"], parameter["schema"]
        seen.add(name)
        assert "minimum" in schema, (path, name)
        ids = {"campaign_id": campaign.public_id, "webhook_id": webhook.public_id}
        ids = {key: value for key, value in ids.items() if f"{{{key}}}" in path}
        refused = 404 if name == "page" else 400  # DRF: a page that is not one is "Invalid page."
        values = [(schema["minimum"], 200), (schema["minimum"] - 1, refused), ("x", refused)]
        values += [("", 200 if parameter.get("allowEmptyValue") else refused)]
        if "maximum" in schema:
            values += [(schema["maximum"], 200), (schema["maximum"] + 1, refused)]
        for value, status in values:
            response = send(api, "GET", path, path_parameters=ids, query={name: value}, headers=bearer(alice))
            assert response.status_code == status, (path, name, value, response.text)
    assert seen == {"page", "page_size", "after", "limit"}
    limit = next(p["schema"] for _, p in integer_query_parameters(document) if p["name"] == "limit")
    assert (limit["minimum"], limit["maximum"]) == (1, EVENTS_MAX_LIMIT)


@pytest.mark.parametrize("value", ["", " 1", "+1", "1_0", "1.0", "١"])
@pytest.mark.parametrize(("name", "refused"), [("page", 404), ("page_size", 400)])
def test_a_page_or_page_size_that_is_not_a_plain_integer_is_refused(api, alice, name, refused, value):
    """What a client would not send for an integer, though Python's int() would take it."""
    response = send(api, "GET", "/api/campaigns/", query={name: value}, headers=bearer(alice))

    assert response.status_code == refused, response.text


TEXTS = [
    ("Spring launch", True),
    ("  padded  ", True),
    ("   ", False),
    ("\u3000\t", False),
    ("\x1c", False),
    ("a\x00b", False),
    ("x" * 200, True),
    ("x" * 200 + " ", False),
    ("x" * 201, False),
]


@pytest.mark.parametrize(("name", "valid"), TEXTS)
def test_the_schema_and_the_server_agree_on_a_campaign_name(api, document, alice, name, valid):
    body = {"name": name, "brief": "A brief."}

    response = send(api, "POST", "/api/campaigns/", body=body, headers=bearer(alice))

    assert response.status_code == (201 if valid else 400), response.text
    assert component(document, "CampaignRequest").is_valid(body) == valid


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        *(
            ({"decision": "approve", "comment": comment}, valid)
            for comment, valid in [("", True), ("  ", True), ("a\x00", False), ("x" * 5001, False)]
        ),
        # a rejection needs a comment
        ({"decision": "reject", "comment": "Too long."}, True),
        ({"decision": "reject"}, False),
        ({"decision": "reject", "comment": " \n "}, False),
    ],
)
def test_the_schema_and_the_server_agree_on_an_approval_decision(api, document, alice, campaign, body, valid):
    run, approval = awaiting_approval(campaign)

    response = decide(api, alice, run, approval, body)

    assert response.status_code == (200 if valid else 400), response.text
    assert component(document, "ApprovalDecisionRequest").is_valid(body) == valid


SETTINGS = [
    ({"require_approval": True, "max_tokens": 1, "max_cost": 0}, True),
    ({"max_cost": 2.5}, True),
    ({"max_tokens": 0}, False),
    ({"max_tokens": 1.5}, False),
    ({"max_cost": -1}, False),
    ({"require_approval": "yes"}, False),
    ({"temperature": 0.2}, False),
    ({"simulate": {"Copy": {"fail_times": 21}}}, False),
    ({"simulate": {"Copy": {"speed": 1}}}, False),
]


@pytest.mark.parametrize(("settings_value", "valid"), SETTINGS)
def test_the_schema_and_the_server_agree_on_campaign_settings(api, document, alice, settings_value, valid):
    body = {"name": "Settings", "brief": "A brief.", "settings": settings_value}

    response = send(api, "POST", "/api/campaigns/", body=body, headers=bearer(alice))

    assert response.status_code == (201 if valid else 400), response.text
    assert component(document, "CampaignRequest").is_valid(body) == valid


@pytest.mark.parametrize("simulation", [False, True])
def test_simulate_is_documented_exactly_when_the_server_accepts_it(api, alice, settings, simulation):
    settings.ORCHESTRATION_SIMULATION = simulation
    document = schemathesis.openapi.from_wsgi("/api/schema/?format=json", api.app).raw_schema  # as served now
    body = {"name": "Simulated", "brief": "A brief.", "settings": {"simulate": {"Copy": {"fail_times": 1}}}}

    response = send(api, "POST", "/api/campaigns/", body=body, headers=bearer(alice))

    assert response.status_code == (201 if simulation else 400)
    assert component(document, "CampaignRequest").is_valid(body) == simulation


# --- Links ----------------------------------------------------------------------------------------


def follow(document: dict[str, Any], path: str, method: str, status: str, body: dict[str, Any]):
    """(operationId, path parameters) of every link of an answer, resolved against its body."""
    links = document["paths"][path][method]["responses"][status].get("links", {})
    for link in links.values():
        parameters = {}
        for name, expression in link["parameters"].items():
            value: Any = body
            for part in expression.removeprefix("$response.body#/").split("/"):
                value = value[int(part)] if isinstance(value, list) else value[part]
            parameters[name] = value
        yield link["operationId"], parameters


def operation_by_id(document: dict[str, Any], operation_id: str) -> tuple[str, str]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("operationId") == operation_id:
                return path, method.upper()
    raise AssertionError(operation_id)


def test_the_links_lead_from_a_new_campaign_and_its_run_to_what_they_name(api, document, alice):
    created = send(api, "POST", "/api/campaigns/", body={"name": "Linked", "brief": "A brief."}, headers=bearer(alice))
    reads = [link for link in follow(document, "/api/campaigns/", "post", "201", created.json())]
    gets = [(operation_id, ids) for operation_id, ids in reads if operation_by_id(document, operation_id)[1] == "GET"]
    assert {operation_id for operation_id, _ in gets} >= {
        "campaigns_retrieve",
        "campaigns_runs_list",
        "campaigns_events_retrieve",
    }
    for operation_id, ids in gets:
        path, method = operation_by_id(document, operation_id)
        assert send(api, method, path, path_parameters=ids, headers=bearer(alice)).status_code == 200, operation_id

    ids = {"campaign_id": created.json()["id"]}
    started = send(api, "POST", "/api/campaigns/{campaign_id}/runs/", path_parameters=ids, headers=bearer(alice))
    run_links = dict(follow(document, "/api/campaigns/{campaign_id}/runs/", "post", "202", started.json()))
    run = send(api, "GET", "/api/runs/{run_id}/", path_parameters=run_links["runs_retrieve"], headers=bearer(alice))
    assert run.json()["id"] == started.json()["id"]


def test_the_link_from_a_run_to_its_approval_decides_it(api, document, alice, campaign):
    run, approval = awaiting_approval(campaign)
    answer = send(api, "GET", "/api/runs/{run_id}/", path_parameters={"run_id": run.public_id}, headers=bearer(alice))

    ids = dict(follow(document, "/api/runs/{run_id}/", "get", "200", answer.json()))["runs_approvals_create"]
    decided = send(
        api,
        "POST",
        "/api/runs/{run_id}/approvals/{approval_id}/",
        path_parameters=ids,
        body={"decision": "approve"},
        headers=bearer(alice),
    )

    assert decided.status_code == 200 and decided.json()["id"] == approval.public_id
