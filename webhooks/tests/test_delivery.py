"""Webhook delivery on the real stack (a Celery worker, Redis, PostgreSQL) to a local receiver that
fails, times out and then succeeds: retries with the same message id, order per webhook, signatures
verified with the receiver's secret, the delivery log, and the account stream's reports."""

from __future__ import annotations

import json
import time

import pytest
from rest_framework.test import APIClient
from standardwebhooks import Webhook as Verifier

from campaigns.tests.factories import CampaignFactory, UserFactory
from eventlog.models import StreamEvent
from orchestration import services as orchestration
from orchestration.tests.conftest import wait_for_run
from webhooks.models import DeliveryStatus, WebhookDelivery
from webhooks.tests.receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EVENTS = ["campaign.started", "artifact.generated", "campaign.completed", "run.started", "run.completed"]


def wait_until(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.05)  # polling the database (or the receiver) for the condition, bounded by the deadline
    return result


def test_retries_order_signatures_log_and_stream(start_worker, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True  # the receiver is on loopback; the worker gets the same setting
    start_worker(WEBHOOKS_ALLOW_PRIVATE="1", WEBHOOK_RETRY_DELAYS="0.2,0.2,0.2,0.2,0.2", WEBHOOK_TIMEOUT_SECONDS="1")
    alice = UserFactory(username="alice")
    api = APIClient()
    api.force_authenticate(alice)
    with Receiver(script=[500, ("hang", 3)]) as receiver:
        created = api.post("/api/webhooks/", {"url": receiver.url, "events": EVENTS}, format="json")
        assert created.status_code == 201, created.json()
        hook = created.json()
        assert hook["secret"].startswith("whsec_") and "secret" not in api.get(f"/api/webhooks/{hook['id']}/").json()

        campaign = CampaignFactory(owner=alice)
        run = wait_for_run(orchestration.run_start(campaign=campaign, created_by=alice))
        deliveries = WebhookDelivery.objects.filter(webhook__public_id=hook["id"])
        wait_until(
            lambda: deliveries.exists() and not deliveries.exclude(status=DeliveryStatus.DELIVERED).exists(),
            "every delivery delivered",
        )

    stored = list(deliveries.order_by("id"))
    assert [d.event for d in stored][:2] == ["campaign.started", "run.started"]
    assert stored[-1].event in ("campaign.completed", "run.completed")
    assert stored[0].attempts == 3 and all(d.attempts == 1 for d in stored[1:])

    verifier = Verifier(hook["secret"])
    bodies = [verifier.verify(r["body"], r["headers"]) for r in receiver.requests]  # raises on a bad signature
    first_id = receiver.requests[0]["headers"]["webhook-id"]
    assert [r["headers"]["webhook-id"] for r in receiver.requests[:3]] == [first_id] * 3, "retries keep the id"
    succeeded = [b for r, b in zip(receiver.requests, bodies, strict=True) if r["answer"] == 200]
    assert [b["event"] for b in succeeded] == [d.event for d in stored], "in order, each once after its retries"
    assert succeeded[0] == {**succeeded[0], "campaign_id": campaign.public_id, "run_id": run.public_id, "sequence": 3}
    assert {"event", "campaign_id", "sequence", "emitted_at", "data"} <= set(succeeded[0])

    log = api.get(f"/api/webhooks/{hook['id']}/deliveries/").json()
    assert log["count"] == len(stored) and log["results"][-1]["attempts"] == 3
    assert set(log["results"][0]) >= {"id", "event", "status", "attempts", "status_code", "next_attempt_at"}
    reports = [
        (e.event, e.data["attempt"], e.data["status_code"])
        for e in StreamEvent.objects.filter(stream__user=alice, event__startswith="webhook.").order_by("sequence")
        if e.data["delivery_id"] == stored[0].public_id
    ]
    assert reports == [("webhook.failed", 1, 500), ("webhook.failed", 2, None), ("webhook.delivered", 3, 200)]
    timeout_error = StreamEvent.objects.get(stream__user=alice, event="webhook.failed", data__attempt=2).data["error"]
    assert "did not answer within 1 s" in timeout_error
    assert json.loads(receiver.requests[0]["body"])["event"] == "campaign.started"


def test_the_test_endpoint_and_an_operator_redelivery(start_worker, settings, operator_client):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    start_worker(WEBHOOKS_ALLOW_PRIVATE="1")
    alice = UserFactory(username="alice")
    api = APIClient()
    api.force_authenticate(alice)
    with Receiver() as receiver:
        hook = api.post("/api/webhooks/", {"url": receiver.url, "events": ["progress"]}, format="json").json()
        answer = api.post(f"/api/webhooks/{hook['id']}/test/")
        assert answer.status_code == 202
        delivery = WebhookDelivery.objects.get(public_id=answer.json()["delivery_id"])
        wait_until(lambda: len(receiver.requests) == 1, "the test delivery")
        assert json.loads(receiver.requests[0]["body"])["event"] == "webhook.test"
        page = operator_client.post(
            "/admin/webhooks/webhookdelivery/", {"action": "send_again", "_selected_action": [delivery.pk]}, follow=True
        )
        assert "Queued 1 delivery(ies) again." in page.content.decode()
        wait_until(lambda: len(receiver.requests) == 2, "the redelivery")
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    assert ids[0] == ids[1], "a redelivery is the same message"
