"""A fuzz pass over every REST entry point (hypothesis): arbitrary JSON bodies, arbitrary query
strings and raw bytes, as the owner of real objects and as a stranger.

What must hold for every input: an answer below 500 whose body is JSON in the API's one error
shape (``{"detail": "…"}`` or field errors ``{"field": ["…"]}``); a refused request stores nothing
(no campaign, run, event or approval decision changes); nothing is logged at ERROR and no traceback.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.models import Campaign
from campaigns.tests.factories import ArtifactFactory, CampaignFactory, RunFactory
from eventlog.models import CampaignEvent
from orchestration.models import Approval, Artifact, OrchestrationRun

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same inputs on every run: a failure is reproducible
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
# Bodies shaped like the real ones, with wrong or hostile values, so validation is reached.
field_names = st.sampled_from(
    [
        "name",
        "brief",
        "settings",
        "instructions",
        "decision",
        "reason",
        "message",
        "level",
        "refresh",
        "username",
        "password",
        "simulate",
        "max_cost",
        "require_approval",
        "channels",
        "comment",
    ]
)
shaped_bodies = st.dictionaries(field_names, json_values, max_size=5)
bodies = shaped_bodies | json_values
query_strings = st.dictionaries(
    st.sampled_from(["limit", "after", "page", "page_size", "ordering", "search", "since", "x"]),
    st.text(max_size=20) | st.integers(min_value=-(2**70), max_value=2**70).map(str),
    max_size=3,
)


@pytest.fixture
def world(alice):
    """Alice's campaign, with an artifact, a run awaiting approval and events."""
    campaign = CampaignFactory(owner=alice)
    ArtifactFactory(campaign=campaign, type="Copy")
    run = RunFactory(campaign=campaign, state="awaiting_approval")
    approval = run.approvals.create(step="generation", reason="Review.")
    return {"campaign": campaign.public_id, "run": run.public_id, "approval": approval.public_id}


def endpoints(ids: dict[str, str]) -> list[tuple[str, str]]:
    c, r, a = ids["campaign"], ids["run"], ids["approval"]
    return [
        ("post", "/api/auth/token/"),
        ("post", "/api/auth/token/refresh/"),
        ("get", "/api/campaigns/"),
        ("post", "/api/campaigns/"),
        ("get", f"/api/campaigns/{c}/"),
        ("patch", f"/api/campaigns/{c}/"),
        ("put", f"/api/campaigns/{c}/"),
        ("get", f"/api/campaigns/{c}/artifacts/"),
        ("get", f"/api/campaigns/{c}/snapshot/"),
        ("get", f"/api/campaigns/{c}/events/"),
        ("get", f"/api/campaigns/{c}/runs/"),
        ("post", f"/api/campaigns/{c}/runs/"),
        ("post", f"/api/campaigns/{c}/artifacts/Copy/revisions/"),
        ("get", f"/api/runs/{r}/"),
        ("post", f"/api/runs/{r}/cancel/"),
        ("post", f"/api/runs/{r}/retry/"),
        ("post", f"/api/runs/{r}/approvals/{a}/"),
        ("post", "/api/notices/"),
        ("get", "/api/ops/realtime/"),
        ("get", "/api/ops/runs/"),
    ]


def state() -> tuple:
    return (
        tuple(Campaign.objects.order_by("pk").values_list("pk", "name", "brief", "settings", "last_sequence")),
        OrchestrationRun.objects.count(),
        tuple(OrchestrationRun.objects.order_by("pk").values_list("state", "cancel_requested")),
        CampaignEvent.objects.count(),
        tuple(Approval.objects.order_by("pk").values_list("state", flat=True)),
        Artifact.objects.count(),
    )


def assert_one_error_shape(response) -> None:
    assert response.status_code < 500, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    if response.status_code < 400:
        return
    assert isinstance(body, dict) and body, body
    if "detail" in body:
        assert isinstance(body["detail"], str) and body["detail"], body
    else:  # field errors: every value a list of messages, or nested field errors
        for value in body.values():
            assert isinstance(value, (list, dict)), body


def no_errors_logged(caplog) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


@pytest.mark.parametrize("as_owner", [True, False], ids=["owner", "stranger"])
def test_arbitrary_bodies_get_a_json_error_and_change_nothing(world, alice_api, bob_api, caplog, as_owner):
    client = alice_api if as_owner else bob_api
    writes = [(method, path) for method, path in endpoints(world) if method != "get"]

    @FUZZ
    @given(target=st.sampled_from(writes), body=bodies)
    def check(target, body):
        method, path = target
        before = state()
        caplog.clear()
        response = getattr(client, method)(path, body, format="json")
        assert_one_error_shape(response)
        if response.status_code >= 400:
            assert state() == before, (method, path, body, response.json())
        no_errors_logged(caplog)

    check()


def test_arbitrary_query_strings_get_a_json_answer(world, alice_api, caplog):
    reads = [path for method, path in endpoints(world) if method == "get"]

    @FUZZ
    @given(path=st.sampled_from(reads), query=query_strings)
    def check(path, query):
        caplog.clear()
        assert_one_error_shape(alice_api.get(path, query))
        no_errors_logged(caplog)

    check()


def test_arbitrary_bytes_and_content_types_get_a_json_error(world, alice_api, caplog):
    writes = [(method, path) for method, path in endpoints(world) if method != "get"]
    content_types = st.sampled_from(
        [
            "application/json",
            "application/json; charset=latin-1",
            "application/json; charset=nonsense",
            "multipart/form-data",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "text/plain",
            "",
        ]
    )

    deep = st.integers(min_value=1, max_value=5000).map(lambda n: b"[" * n + b"]" * n)

    @FUZZ
    @given(target=st.sampled_from(writes), raw=st.binary(max_size=200) | deep, content_type=content_types)
    def check(target, raw, content_type):
        method, path = target
        before = state()
        caplog.clear()
        response = alice_api.generic(method.upper(), path, raw, content_type=content_type)
        assert_one_error_shape(response)
        if response.status_code >= 400:
            assert state() == before
        no_errors_logged(caplog)

    check()
