"""The runs REST API (PROTOCOL.md §3, §4, §7) as a client sees it: status codes, JSON bodies, the event
log and the stored rows.

No worker runs here: a started run stays ``pending`` (its task is only queued after commit, and the
test's transaction never commits), which is exactly what a client sees in the first instant.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from campaigns.tests.factories import ArtifactFactory, CampaignFactory, RunFactory
from eventlog.models import CampaignEvent
from orchestration.models import Approval, OrchestrationRun, RunState
from orchestration.tests.api import (
    AGENTS,
    ISO_UTC,
    PLAN,
    approval_url,
    assert_json_error,
    database,
    events,
    get_run,
    post,
    revisions_url,
    run_url,
    runs_url,
)

pytestmark = pytest.mark.django_db


# --- Starting a run --------------------------------------------------------------------------------


def test_starting_a_run_answers_202_with_the_pending_run(alice_api, campaign):
    response = post(alice_api, runs_url(campaign))

    assert response.status_code == 202, response.content
    run = response.json()
    assert re.fullmatch(r"run_[A-Za-z0-9_-]+", run["id"])
    assert run["campaign_id"] == campaign.public_id
    assert run["state"] == "pending"
    assert run["kind"] == "generation"
    assert run["plan"] == PLAN
    assert [step["step"] for step in run["steps"]] == PLAN
    assert [step["agent"] for step in run["steps"]] == AGENTS
    assert all(step["status"] == "pending" and step["attempt"] == 0 for step in run["steps"])
    assert set(run["usage"]) == {"prompt_tokens", "completion_tokens", "cost"}
    assert run["usage"]["prompt_tokens"] == 0 and run["usage"]["completion_tokens"] == 0
    assert float(run["usage"]["cost"]) == 0
    assert run["error"] is None
    assert run["cancel_requested"] is False
    assert run["approvals"] == []
    assert ISO_UTC.match(run["created_at"])
    assert run["started_at"] is None and run["finished_at"] is None
    assert run["settings"] == {"max_tokens": 500}, "the campaign's settings apply to the run"
    assert OrchestrationRun.objects.filter(campaign=campaign).count() == 1


def test_starting_a_run_logs_the_pending_state(alice_api, campaign):
    run = post(alice_api, runs_url(campaign)).json()

    log = events(alice_api, campaign)
    assert [e["event"] for e in log] == ["orchestration.state_changed"]
    assert log[0]["run_id"] == run["id"]
    assert log[0]["campaign_id"] == campaign.public_id
    assert log[0]["sequence"] == 1
    assert log[0]["data"] == {"state": "pending", "previous_state": None}
    campaign_body = alice_api.get(f"/api/campaigns/{campaign.public_id}/").json()
    assert campaign_body["state"] == "pending" and campaign_body["latest_run_id"] == run["id"]


def test_the_202_body_is_the_run_as_it_reads_back(alice_api, campaign):
    """One object has one shape everywhere: the answer to the POST is what GET shows right after."""
    started = post(alice_api, runs_url(campaign)).json()

    assert get_run(alice_api, started["id"]) == started


def test_a_second_start_while_a_run_is_active_is_409_and_makes_no_run(alice_api, campaign):
    first = post(alice_api, runs_url(campaign))
    assert first.status_code == 202
    before = database()

    second = post(alice_api, runs_url(campaign))

    body = assert_json_error(second, 409)
    assert set(body) == {"detail"} and "active run" in body["detail"]
    assert database() == before
    assert OrchestrationRun.objects.filter(campaign=campaign).count() == 1


@pytest.mark.django_db(transaction=True)
def test_simultaneous_starts_make_exactly_one_run(alice):
    campaign = CampaignFactory(owner=alice)
    clients = 6
    barrier = threading.Barrier(clients)
    statuses: list[int] = []

    def start() -> None:
        client = APIClient()
        client.force_authenticate(alice)
        try:
            barrier.wait(10)
            statuses.append(post(client, runs_url(campaign)).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(statuses) == [202] + [409] * (clients - 1)
    assert OrchestrationRun.objects.filter(campaign=campaign).count() == 1
    assert list(CampaignEvent.objects.filter(campaign=campaign).values_list("sequence", "event")) == [
        (1, "orchestration.state_changed")
    ]


@pytest.mark.parametrize("state", ["planning", "generating", "awaiting_approval", "auditing"])
def test_every_unfinished_state_blocks_a_new_run(alice_api, campaign, state):
    RunFactory(campaign=campaign, state=state)
    before = database()

    assert_json_error(post(alice_api, runs_url(campaign)), 409)
    assert database() == before


@pytest.mark.parametrize("state", ["completed", "failed", "cancelled"])
def test_a_finished_run_does_not_block_a_new_one(alice_api, campaign, state):
    old = RunFactory(campaign=campaign, state=state, steps="completed")

    response = post(alice_api, runs_url(campaign))

    assert response.status_code == 202, response.content
    assert response.json()["id"] != old.public_id
    assert OrchestrationRun.objects.filter(campaign=campaign).count() == 2


def test_run_settings_are_merged_over_the_campaign_settings(alice_api, campaign, settings):
    settings.ORCHESTRATION_SIMULATION = True  # a test or demo server
    body = {"settings": {"require_approval": True, "max_tokens": 900, "simulate": {"Copy": {"delay_ms": 10}}}}

    response = post(alice_api, runs_url(campaign), body)

    assert response.status_code == 202, response.content
    expected = {"max_tokens": 900, "require_approval": True, "simulate": {"Copy": {"delay_ms": 10}}}
    assert response.json()["settings"] == expected
    assert get_run(alice_api, response.json()["id"])["settings"] == expected
    campaign.refresh_from_db()
    assert campaign.settings == {"max_tokens": 500}, "the campaign's own settings are untouched"


def test_an_empty_settings_object_keeps_the_campaign_settings(alice_api, campaign):
    response = post(alice_api, runs_url(campaign), {"settings": {}})

    assert response.status_code == 202, response.content
    assert response.json()["settings"] == {"max_tokens": 500}


@pytest.mark.parametrize(
    "body",
    [
        {"settings": {"colour": "red"}},
        {"settings": {"max_tokens": "many"}},
        {"settings": {"max_tokens": 0}},
        {"settings": {"max_tokens": True}},
        {"settings": {"require_approval": "yes"}},
        {"settings": {"max_cost": -1}},
        {"settings": {"simulate": {"Banner": {"fail_times": 1}}}},
        {"settings": {"simulate": {"Copy": {"fail_times": 21}}}},
        {"settings": {"simulate": {"Copy": {"explode": True}}}},
        {"settings": {"simulate": []}},
        {"settings": ["require_approval"]},
        {"settings": "require_approval"},
        {"settings": 3},
        {"settings": None},
        [],
        ["settings"],
        "settings",
    ],
    ids=repr,
)
def test_bad_settings_are_400_and_start_nothing(alice_api, campaign, body, settings):
    settings.ORCHESTRATION_SIMULATION = True  # so a bad simulate is refused for its shape
    before = database()

    response = post(alice_api, runs_url(campaign), body)

    assert_json_error(response, 400)
    assert database() == before
    assert not OrchestrationRun.objects.exists()


def test_a_run_with_simulate_is_refused_where_the_server_does_not_enable_it(alice_api, campaign, settings):
    settings.ORCHESTRATION_SIMULATION = False  # the default
    before = database()

    response = post(alice_api, runs_url(campaign), {"settings": {"simulate": {"Copy": {"delay_ms": 600_000}}}})

    body = assert_json_error(response, 400)
    assert list(body) == ["settings"]
    assert body["settings"][0].startswith("simulate is disabled on this server")
    assert database() == before
    assert not OrchestrationRun.objects.exists()


def test_a_bad_settings_error_names_the_field(alice_api, campaign):
    response = post(alice_api, runs_url(campaign), {"settings": {"colour": "red"}})

    body = assert_json_error(response, 400)
    assert "settings" in body
    assert any("colour" in message for message in body["settings"])


@pytest.mark.parametrize("raw", ['{"settings": {', "not json", '{"settings": {"max_tokens": 1,}}'])
def test_malformed_json_is_400(alice_api, campaign, raw):
    before = database()

    response = alice_api.post(runs_url(campaign), raw, content_type="application/json")

    assert "detail" in assert_json_error(response, 400)
    assert database() == before


# --- Listing and reading runs ----------------------------------------------------------------------


def test_runs_are_listed_newest_first_and_paginated(alice_api, campaign):
    old = [RunFactory(campaign=campaign, state=state) for state in ("completed", "failed", "cancelled")]
    newest = post(alice_api, runs_url(campaign)).json()
    RunFactory(campaign=CampaignFactory(owner=campaign.owner), state="completed")  # another campaign's run

    response = alice_api.get(runs_url(campaign))

    assert response.status_code == 200
    page = response.json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 4
    assert [run["id"] for run in page["results"]] == [newest["id"], *[run.public_id for run in reversed(old)]]
    assert page["results"][0]["state"] == "pending"
    assert all(run["campaign_id"] == campaign.public_id for run in page["results"])

    first = alice_api.get(runs_url(campaign), {"page_size": 3}).json()
    assert len(first["results"]) == 3 and first["next"] is not None and first["previous"] is None
    second = alice_api.get(first["next"]).json()
    assert [run["id"] for run in second["results"]] == [old[0].public_id]


def test_listing_runs_costs_the_same_queries_for_one_run_or_many(alice_api, campaign, operator):
    from django.test.utils import CaptureQueriesContext

    def listed() -> tuple[int, list[dict[str, Any]]]:
        with CaptureQueriesContext(connection) as queries:
            response = alice_api.get(runs_url(campaign))
        assert response.status_code == 200
        return len(queries), response.json()["results"]

    RunFactory(campaign=campaign, state="completed")
    one, _ = listed()
    for _ in range(4):
        run = RunFactory(campaign=campaign, state="completed")
        Approval.objects.create(run=run, step="Copy", state="approved", decided_by=operator)
    many, results = listed()

    assert many == one
    assert all(r["approvals"] and r["approvals"][0]["decided_by"] == "charlie" for r in results[:4]), results[0]
    assert all([s["step"] for s in r["steps"]] == r["plan"] for r in results), results[0]


def test_a_campaign_that_never_ran_has_an_empty_run_list(alice_api, campaign):
    response = alice_api.get(runs_url(campaign))

    assert response.status_code == 200
    assert response.json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_run_detail_shows_steps_attempts_usage_and_error(alice_api, campaign):
    run = RunFactory(
        campaign=campaign,
        state=RunState.FAILED,
        steps={"Copy": "completed", "ShortCopy": "failed"},
        attempts=4,
        error="Gave up after 4 attempts.",
        prompt_tokens=120,
        completion_tokens=80,
    )

    body = get_run(alice_api, run)

    assert body["id"] == run.public_id and body["campaign_id"] == campaign.public_id
    assert body["state"] == "failed"
    assert body["attempts"] == 4
    assert body["error"] == "Gave up after 4 attempts."
    assert body["usage"]["prompt_tokens"] == 120 and body["usage"]["completion_tokens"] == 80
    assert [(step["step"], step["status"]) for step in body["steps"]] == [
        ("Copy", "completed"),
        ("ShortCopy", "failed"),
        ("Visual", "pending"),
        ("audit", "pending"),
    ]


def test_staff_see_every_users_runs(operator_api, campaign):
    run = RunFactory(campaign=campaign, state=RunState.COMPLETED)

    assert get_run(operator_api, run)["id"] == run.public_id
    assert operator_api.get(runs_url(campaign)).json()["count"] == 1


# --- Cancel and retry ------------------------------------------------------------------------------


def test_cancel_answers_202_and_logs_run_cancelled_last(alice_api, campaign):
    run = post(alice_api, runs_url(campaign)).json()

    response = post(alice_api, run_url(run["id"], "cancel"))

    assert response.status_code == 202, response.content
    assert response.json() == {"run_id": run["id"], "state": "cancelled"}
    body = get_run(alice_api, run["id"])
    assert body["state"] == "cancelled"
    assert body["cancel_requested"] is True
    assert body["finished_at"] is not None
    log = events(alice_api, campaign)
    assert log[-1]["event"] == "run.cancelled"
    assert log[-1]["run_id"] == run["id"]
    assert log[-1]["data"] == {"run_id": run["id"], "requested_by": "alice"}
    assert {"state": "cancelled", "previous_state": "pending"} in [
        e["data"] for e in log if e["event"] == "orchestration.state_changed"
    ]
    assert [e["sequence"] for e in log] == list(range(1, len(log) + 1))


def test_cancel_stops_the_steps_that_were_running(alice_api, campaign):
    run = RunFactory(campaign=campaign, state=RunState.GENERATING, steps={"Copy": "completed", "ShortCopy": "running"})

    assert post(alice_api, run_url(run, "cancel")).status_code == 202

    body = get_run(alice_api, run)
    statuses = {step["step"]: step["status"] for step in body["steps"]}
    assert statuses["Copy"] == "completed", "a checkpoint survives the cancellation"
    assert statuses["ShortCopy"] == "cancelled"


def test_staff_cancelling_is_recorded_under_their_name(operator_api, campaign):
    run = RunFactory(campaign=campaign, state=RunState.GENERATING)

    assert post(operator_api, run_url(run, "cancel")).status_code == 202

    last = CampaignEvent.objects.filter(campaign=campaign).order_by("sequence").last()
    assert last.event == "run.cancelled"
    assert last.data == {"run_id": run.public_id, "requested_by": "charlie"}


@pytest.mark.parametrize("state", ["completed", "failed", "cancelled"])
def test_cancelling_a_finished_run_is_409(alice_api, campaign, state):
    run = RunFactory(campaign=campaign, state=state)
    before = database()

    body = assert_json_error(post(alice_api, run_url(run, "cancel")), 409)

    assert set(body) == {"detail"}
    assert database() == before


def test_cancelling_twice_is_409_the_second_time(alice_api, campaign):
    run = post(alice_api, runs_url(campaign)).json()
    assert post(alice_api, run_url(run["id"], "cancel")).status_code == 202
    before = database()

    assert_json_error(post(alice_api, run_url(run["id"], "cancel")), 409)
    assert database() == before
    assert [e["event"] for e in events(alice_api, campaign)].count("run.cancelled") == 1


def test_a_cancelled_run_can_be_retried(alice_api, campaign):
    run = post(alice_api, runs_url(campaign)).json()
    post(alice_api, run_url(run["id"], "cancel"))

    response = post(alice_api, run_url(run["id"], "retry"))

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["id"] == run["id"], "a retry resumes the same run"
    assert body["state"] == "pending"
    assert body["error"] is None and body["cancel_requested"] is False and body["finished_at"] is None
    assert all(step["status"] == "pending" for step in body["steps"])
    assert get_run(alice_api, run["id"])["state"] == "pending"
    log = events(alice_api, campaign)
    assert {"state": "pending", "previous_state": "cancelled"} in [
        e["data"] for e in log if e["event"] == "orchestration.state_changed"
    ]
    assert OrchestrationRun.objects.filter(campaign=campaign).count() == 1


def test_retrying_a_failed_run_keeps_its_checkpoints(alice_api, campaign):
    run = RunFactory(
        campaign=campaign,
        state=RunState.FAILED,
        error="Gave up.",
        steps={"Copy": "completed", "ShortCopy": "completed", "Visual": "failed"},
    )

    response = post(alice_api, run_url(run, "retry"))

    assert response.status_code == 202, response.content
    statuses = {step["step"]: (step["status"], step["attempt"]) for step in response.json()["steps"]}
    assert statuses == {
        "Copy": ("completed", 0),
        "ShortCopy": ("completed", 0),
        "Visual": ("pending", 0),
        "audit": ("pending", 0),
    }
    assert response.json()["error"] is None


@pytest.mark.parametrize("state", ["pending", "generating", "awaiting_approval", "completed"])
def test_retrying_a_run_that_neither_failed_nor_was_cancelled_is_409(alice_api, campaign, state):
    run = RunFactory(campaign=campaign, state=state)
    before = database()

    body = assert_json_error(post(alice_api, run_url(run, "retry")), 409)

    assert set(body) == {"detail"}
    assert database() == before


def test_retrying_while_another_run_of_the_campaign_is_active_is_409(alice_api, campaign):
    cancelled = RunFactory(campaign=campaign, state=RunState.CANCELLED)
    post(alice_api, runs_url(campaign))
    before = database()

    assert_json_error(post(alice_api, run_url(cancelled, "retry")), 409)
    assert database() == before


# --- Who may do what -------------------------------------------------------------------------------


@pytest.fixture
def alices(campaign, awaiting) -> dict[str, Any]:
    """Alice's objects in states where each endpoint would succeed for her."""
    run, approval = awaiting
    idle = CampaignFactory(owner=campaign.owner, name="Alice's second launch")
    cancelled = RunFactory(campaign=idle, state=RunState.CANCELLED, steps={"Copy": "completed"})
    ArtifactFactory(run=cancelled, type="Copy")
    return {"campaign": campaign, "run": run, "approval": approval, "idle": idle, "cancelled": cancelled}


# (name, method, url, body, status for the owner)
def endpoints(o: dict[str, Any]) -> list[tuple[str, str, str, Any, int]]:
    return [
        ("start", "post", runs_url(o["idle"]), {}, 202),
        ("list", "get", runs_url(o["campaign"]), None, 200),
        ("detail", "get", run_url(o["run"]), None, 200),
        ("cancel", "post", run_url(o["run"], "cancel"), None, 202),
        ("retry", "post", run_url(o["cancelled"], "retry"), None, 202),
        ("approval", "post", approval_url(o["run"], o["approval"]), {"decision": "approve"}, 200),
        ("revision", "post", revisions_url(o["idle"], "Copy"), {"instructions": "Shorter."}, 202),
    ]


ENDPOINT_NAMES = ["start", "list", "detail", "cancel", "retry", "approval", "revision"]


def request(client: APIClient, method: str, url: str, body: Any) -> Any:
    return client.post(url, body, format="json") if method == "post" else client.get(url)


def endpoint(alices: dict[str, Any], name: str) -> tuple[str, str, Any, int]:
    found = next(item for item in endpoints(alices) if item[0] == name)
    return found[1], found[2], found[3], found[4]


@pytest.mark.parametrize("name", ENDPOINT_NAMES)
def test_the_owner_may_use_every_endpoint(alice_api, alices, name):
    method, url, body, status = endpoint(alices, name)

    assert request(alice_api, method, url, body).status_code == status


@pytest.mark.parametrize("name", ENDPOINT_NAMES)
def test_another_user_gets_404_and_changes_nothing(bob_api, alices, name):
    method, url, body, _ = endpoint(alices, name)
    before = database()

    response = request(bob_api, method, url, body)

    assert set(assert_json_error(response, 404)) == {"detail"}
    assert database() == before


@pytest.mark.parametrize("name", ENDPOINT_NAMES)
def test_another_users_404_is_the_same_as_for_a_missing_object(bob_api, alices, name):
    method, url, body, _ = endpoint(alices, name)
    missing = url.replace(alices["campaign"].public_id, "camp_missing").replace(
        alices["idle"].public_id, "camp_missing"
    )
    missing = missing.replace(alices["run"].public_id, "run_missing").replace(
        alices["cancelled"].public_id, "run_missing"
    )
    assert missing != url

    assert request(bob_api, method, url, body).json() == request(bob_api, method, missing, body).json()


@pytest.mark.parametrize("name", ENDPOINT_NAMES)
def test_anonymous_requests_are_401_and_change_nothing(anon_api, alices, name):
    method, url, body, _ = endpoint(alices, name)
    before = database()

    response = request(anon_api, method, url, body)

    assert set(assert_json_error(response, 401)) == {"detail"}
    assert database() == before


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("get", "/api/runs/run_doesnotexist/", None),
        ("post", "/api/runs/run_doesnotexist/cancel/", None),
        ("post", "/api/runs/run_doesnotexist/retry/", None),
        ("post", "/api/runs/run_doesnotexist/approvals/apr_doesnotexist/", {"decision": "approve"}),
        ("get", "/api/campaigns/camp_doesnotexist/runs/", None),
        ("post", "/api/campaigns/camp_doesnotexist/runs/", {}),
        ("post", "/api/campaigns/camp_doesnotexist/artifacts/Copy/revisions/", {"instructions": "Shorter."}),
        ("get", "/api/runs/42/", None),
    ],
)
def test_unknown_ids_are_json_404(alice_api, alices, method, url, body):
    before = database()

    assert set(assert_json_error(request(alice_api, method, url, body), 404)) == {"detail"}
    assert database() == before


@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("get", "/api/runs/{run}%00/"),
        ("get", "/api/runs/%00/"),
        ("post", "/api/runs/{run}%00/cancel/"),
        ("post", "/api/runs/{cancelled}%00/retry/"),
        ("post", "/api/runs/{run}%00/approvals/{approval}/"),
        ("post", "/api/runs/{run}/approvals/{approval}%00/"),
        ("post", "/api/runs/{run}/approvals/%00/"),
        ("get", "/api/campaigns/{campaign}%00/runs/"),
        ("post", "/api/campaigns/{idle}%00/runs/"),
        ("post", "/api/campaigns/{idle}%00/artifacts/Copy/revisions/"),
    ],
)
def test_an_id_with_a_nul_byte_is_404_not_500(alice_api, alices, method, template):
    url = template.format(
        run=alices["run"].public_id,
        cancelled=alices["cancelled"].public_id,
        approval=alices["approval"].public_id,
        campaign=alices["campaign"].public_id,
        idle=alices["idle"].public_id,
    )
    body = {"decision": "approve", "instructions": "Shorter."} if method == "post" else None
    before = database()

    response = request(alice_api, method, url, body)

    assert set(assert_json_error(response, 404)) == {"detail"}
    assert database() == before


def test_unknown_paths_under_runs_are_json_404(alice_api, alices):
    for url in (f"{run_url(alices['run'])}pause/", "/api/runs/", f"{run_url(alices['run'])}approvals/"):
        response = alice_api.get(url)
        assert response.status_code == 404, url
        assert response.json() == {"detail": "Not found."}


# --- Schema ----------------------------------------------------------------------------------------


def test_openapi_schema_lists_the_run_paths(alice_api):
    response = alice_api.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = json.loads(response.content)
    paths = schema["paths"]
    expected = {
        "/api/campaigns/{campaign_id}/runs/": {"get", "post"},
        "/api/runs/{run_id}/": {"get"},
        "/api/runs/{run_id}/cancel/": {"post"},
        "/api/runs/{run_id}/retry/": {"post"},
        "/api/runs/{run_id}/approvals/{approval_id}/": {"post"},
        "/api/campaigns/{campaign_id}/artifacts/{artifact_type}/revisions/": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    start = paths["/api/campaigns/{campaign_id}/runs/"]["post"]
    assert "202" in start["responses"]
    assert "202" in paths["/api/runs/{run_id}/cancel/"]["post"]["responses"]
    assert "200" in paths["/api/runs/{run_id}/approvals/{approval_id}/"]["post"]["responses"]
