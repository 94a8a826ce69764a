"""REST writes while the broker (Redis) is down: 503 JSON, nothing stored (PROTOCOL.md §9).

The fault is real: the test's own redis-server, configured as the broker, is killed."""

from __future__ import annotations

import json

import pytest

from campaigns.models import Campaign
from campaigns.tests.factories import ArtifactFactory, CampaignFactory, RunFactory
from eventlog.models import CampaignEvent
from marketing_agents.tests.processes import RedisServer, run_without_database
from orchestration.models import Approval, OrchestrationRun, RunState

pytestmark = pytest.mark.django_db


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
    result = run_without_database(DATABASE_DOWN_SCRIPT)
    lines = result.stdout.splitlines()
    assert lines == [
        '503 application/json {"detail":"The database is una',
        '503 application/json {"detail":"The database is una',
        "503 text/plain The database is unavailable ri",
    ], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "database unavailable: OperationalError" in result.stderr


SOCKETS_WHILE_DATABASE_DOWN_SCRIPT = """
import asyncio, json
import django
django.setup()
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from rest_framework_simplejwt.tokens import AccessToken
from marketing_agents.asgi import application

token = AccessToken.for_user(User(id=1, username="alice"))

async def main():
    native = WebsocketCommunicator(application, f"/ws/campaigns/?access_token={token}")
    print(await native.connect())
    print(await native.receive_output(5))
    print(await native.receive_output(5))
    hub = WebsocketCommunicator(application, f"/hubs/campaign?access_token={token}")
    print(await hub.connect())
    await hub.send_to('{"protocol":"json","version":1}\\x1e')
    print(await hub.receive_output(5))
    print(await hub.receive_output(5))
    print(await hub.receive_output(5))

asyncio.run(main())
"""


def test_sockets_opened_while_the_database_is_unreachable_are_told_to_try_again():
    """Native: an ``internal_error`` frame naming the outage, then close 1013. SignalR: the handshake
    answer, then the hub's Close message with the outage and ``allowReconnect`` (an automatic-reconnect
    client tries again), then close 1013. No traceback in the log."""
    import ast

    from marketing_agents.errors import DATABASE_DOWN

    result = run_without_database(SOCKETS_WHILE_DATABASE_DOWN_SCRIPT)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [ast.literal_eval(line) for line in result.stdout.splitlines()]
    accepted, native_error, native_close, hub_accepted, handshake, hub_close, hub_socket_close = lines
    assert accepted == (True, None) and hub_accepted == (True, None)
    assert json.loads(native_error["text"]) == {"type": "error", "code": "internal_error", "message": DATABASE_DOWN}
    assert native_close == {"type": "websocket.close", "code": 1013}
    assert handshake["text"] == "{}\x1e"
    assert json.loads(hub_close["text"].rstrip("\x1e")) == {"type": 7, "error": DATABASE_DOWN, "allowReconnect": True}
    assert hub_socket_close == {"type": "websocket.close", "code": 1013}
    assert "Traceback" not in result.stderr and "database unavailable: OperationalError" in result.stderr


def reset_pools(app) -> None:
    """Celery's connection and producer pools, forgotten (kombu keeps them, per broker URL) so the
    next send takes them for broker_url."""
    app._pool = None
    app.amqp._producer_pool = None


def test_a_task_send_lost_after_commit_is_logged_and_the_recovery_task_queues_it(
    alice, alice_api, settings, tmp_path, caplog, django_capture_on_commit_callbacks
):
    """The broker answers the check, then goes away before the commit: the run is stored (202), the
    lost send is a warning, not an error to the client, and once Redis is back the recovery task
    puts the run's message on the broker."""
    import redis

    from marketing_agents.celery import app
    from orchestration import services

    server = RedisServer(tmp_path).start()
    previous, settings.CELERY_BROKER_URL = settings.CELERY_BROKER_URL, server.url
    settings.RUN_REQUEUE_AFTER_SECONDS = 0
    reset_pools(app)  # Celery reads CELERY_BROKER_URL from the settings: the next send goes to the test's Redis
    try:
        campaign = CampaignFactory(owner=alice)
        with django_capture_on_commit_callbacks() as callbacks:
            response = alice_api.post(f"/api/campaigns/{campaign.public_id}/runs/", {}, format="json")
        assert response.status_code == 202, response.content
        server.kill()
        for callback in callbacks:
            callback()  # the commit: the send fails
        assert "the broker is unreachable" in caplog.text and "Traceback" not in caplog.text
        run = OrchestrationRun.objects.get(public_id=response.json()["id"])
        assert run.state == RunState.PENDING

        server.start()
        with django_capture_on_commit_callbacks(execute=True):
            assert services.runs_recover() == 1
        queued = [json.loads(m)["headers"]["task"] for m in redis.Redis.from_url(server.url).lrange("celery", 0, -1)]
        assert queued == ["orchestration.tasks.run_begin"]
    finally:
        settings.CELERY_BROKER_URL = previous
        reset_pools(app)  # and the tests after this one send to the suite's broker again
        server.stop()
