"""REST writes while the broker (Redis) is down: 503 JSON, nothing stored (PROTOCOL.md §9).

The fault is real: the test's own redis-server, configured as the broker, is killed."""

from __future__ import annotations

import pytest

from campaigns.models import Approval, Campaign, CampaignEvent, OrchestrationRun, RunState
from campaigns.tests.factories import ArtifactFactory, CampaignFactory, RunFactory
from marketing_agents.tests.processes import RedisServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker_down(settings, tmp_path):
    server = RedisServer(tmp_path).start()
    settings.CELERY_BROKER_URL = server.url
    server.kill()
    yield
    server.stop()


def assert_503(response) -> None:
    assert response.status_code == 503, response.content
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {
        "detail": "The message broker is unavailable right now; nothing was changed. Try again in a few seconds."
    }


def unchanged(campaign: Campaign, runs: int, events: int) -> None:
    assert OrchestrationRun.objects.filter(campaign=campaign).count() == runs
    assert CampaignEvent.objects.filter(campaign=campaign).count() == events
    assert Campaign.objects.get(pk=campaign.pk).last_sequence == events


def test_starting_a_run_is_503_and_stores_nothing(alice, alice_api, broker_down, caplog):
    campaign = CampaignFactory(owner=alice)
    assert_503(alice_api.post(f"/api/campaigns/{campaign.public_id}/runs/", {}, format="json"))
    unchanged(campaign, runs=0, events=0)
    assert "Traceback" not in caplog.text and "broker unavailable" in caplog.text


def test_a_revision_is_503_and_stores_nothing(alice, alice_api, broker_down):
    campaign = CampaignFactory(owner=alice)
    ArtifactFactory(campaign=campaign, type="Copy")
    url = f"/api/campaigns/{campaign.public_id}/artifacts/Copy/revisions/"
    assert_503(alice_api.post(url, {"instructions": "Shorter."}, format="json"))
    unchanged(campaign, runs=0, events=0)


@pytest.mark.parametrize(("state", "action"), [(RunState.GENERATING, "cancel"), (RunState.FAILED, "retry")])
def test_cancel_and_retry_are_503_and_leave_the_run_as_it_was(alice, alice_api, broker_down, state, action):
    campaign = CampaignFactory(owner=alice)
    run = RunFactory(campaign=campaign, state=state)
    assert_503(alice_api.post(f"/api/runs/{run.public_id}/{action}/"))
    run.refresh_from_db()
    assert run.state == state and not run.cancel_requested
    unchanged(campaign, runs=1, events=0)


def test_an_approval_is_503_and_stays_pending(alice, alice_api, broker_down):
    campaign = CampaignFactory(owner=alice)
    run = RunFactory(campaign=campaign, state=RunState.AWAITING_APPROVAL)
    approval = run.approvals.create(step="generation", reason="Review.")
    url = f"/api/runs/{run.public_id}/approvals/{approval.public_id}/"
    assert_503(alice_api.post(url, {"decision": "approve"}, format="json"))
    assert Approval.objects.get(pk=approval.pk).state == "pending"
    assert OrchestrationRun.objects.get(pk=run.pk).state == RunState.AWAITING_APPROVAL


DATABASE_DOWN_SCRIPT = """
import django
django.setup()
from django.contrib.auth.models import User
from django.test import Client
from rest_framework_simplejwt.tokens import AccessToken

token = AccessToken.for_user(User(id=1, username="alice"))
client = Client()
for response in (
    client.get("/api/campaigns/", HTTP_AUTHORIZATION=f"Bearer {token}"),
    client.post("/api/auth/token/", {"username": "alice", "password": "x"}, content_type="application/json"),
    client.post("/admin/login/", {"username": "alice", "password": "x"}),
):
    print(response.status_code, response.headers["Content-Type"].split(";")[0], response.content.decode()[:30])
"""


def test_requests_while_the_database_is_unreachable_are_503_not_500():
    """A web process whose database is down (nothing listens on port 1): 503 with a readable message,
    JSON under /api/, and a one-line warning in the log instead of a traceback."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    result = subprocess.run(
        [sys.executable, "-c", DATABASE_DOWN_SCRIPT],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", "ALLOWED_HOSTS": "testserver"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert lines == [
        '503 application/json {"detail":"The database is una',
        '503 application/json {"detail":"The database is una',
        "503 text/plain The database is unavailable ri",
    ], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "database unavailable: OperationalError" in result.stderr
