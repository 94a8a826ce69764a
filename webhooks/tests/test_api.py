"""The webhooks REST API (PROTOCOL.md §12): owners only, the secret once, SSRF refused, bad input clear;
deliveries written with the event that causes them, only for the owner's events."""

from __future__ import annotations

import pytest
from django.db import transaction

from campaigns.tests.factories import CampaignFactory
from eventlog.publisher import publish
from webhooks.models import Webhook, WebhookDelivery
from webhooks.services import body_of, webhook_create


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/h",
        "http://localhost/h",
        "http://10.1.2.3/h",
        "http://169.254.169.254/",
        "http://0.0.0.0/",
    ],
)
def test_private_and_loopback_targets_are_refused_without_the_setting(alice_api, url):
    answer = alice_api.post("/api/webhooks/", {"url": url, "events": ["progress"]}, format="json")
    assert answer.status_code == 400
    assert "public addresses only" in answer.json()["detail"]
    assert not Webhook.objects.exists()


def test_the_setting_allows_them(alice_api, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    answer = alice_api.post("/api/webhooks/", {"url": "http://127.0.0.1:9/h", "events": ["progress"]}, format="json")
    assert answer.status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/", "events": ["progress"]},
        {"url": "http://[::1]/h", "events": ["progress"]},
        {"url": "http://example.com/a b", "events": ["progress"]},
        {"url": "http://☃.net/", "events": ["progress"]},
        {"url": "not a url", "events": ["progress"]},
        {"url": "http://127.0.0.1/h", "events": []},
        {"url": "http://127.0.0.1/h", "events": ["nope"]},
        {"url": "http://127.0.0.1/h", "events": ["webhook.delivered"]},
        {"url": "http://127.0.0.1/h", "events": "progress"},
        {"url": "http://127.0.0.1/h", "events": [3]},
        {"url": "http://127.0.0.1/h"},
        {"events": ["progress"]},
    ],
)
def test_bad_input_is_a_clear_error_and_makes_nothing(alice_api, settings, body):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    answer = alice_api.post("/api/webhooks/", body, format="json")
    assert answer.status_code == 400 and answer.json()
    assert not Webhook.objects.exists()


def test_bob_never_sees_changes_or_deletes_alices_webhook(alice, bob_api, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    hook = webhook_create(user_id=alice.pk, url="http://127.0.0.1/h", events=["progress"])
    assert bob_api.get("/api/webhooks/").json()["count"] == 0
    for call in (bob_api.get, bob_api.patch, bob_api.delete):
        assert call(f"/api/webhooks/{hook.public_id}/").status_code == 404
    assert bob_api.get(f"/api/webhooks/{hook.public_id}/deliveries/").status_code == 404
    assert bob_api.post(f"/api/webhooks/{hook.public_id}/test/").status_code == 404
    assert Webhook.objects.filter(pk=hook.pk, active=True).exists()


def test_patch_and_delete(alice_api, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    hook = alice_api.post("/api/webhooks/", {"url": "http://127.0.0.1/h", "events": ["progress"]}, format="json").json()
    changed = alice_api.patch(
        f"/api/webhooks/{hook['id']}/", {"events": ["run.started"], "active": False}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["events"] == ["run.started"] and not changed.json()["active"]
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    refused = alice_api.patch(f"/api/webhooks/{hook['id']}/", {"url": "http://10.0.0.1/"}, format="json")
    assert refused.status_code == 400
    assert alice_api.get(f"/api/webhooks/{hook['id']}/").json()["url"] == "http://127.0.0.1/h"
    assert alice_api.delete(f"/api/webhooks/{hook['id']}/").status_code == 204
    assert not Webhook.objects.exists()


def test_deliveries_follow_the_owners_subscribed_events_in_the_publishing_transaction(alice, bob, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    mine = webhook_create(user_id=alice.pk, url="http://127.0.0.1/h", events=["progress"])
    bobs = webhook_create(user_id=bob.pk, url="http://127.0.0.1/h", events=["progress"])
    campaign = CampaignFactory(owner=alice)
    publish(campaign, "progress", {"percentage": 1, "message": "a"})
    publish(campaign, "agent.thought", {"agent": "x", "thought": "not asked for"})
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(campaign, "progress", {"percentage": 2, "message": "rolled back"})
        raise RuntimeError
    [delivery] = WebhookDelivery.objects.all()
    assert delivery.webhook == mine and delivery.payload["sequence"] == 1 and delivery.payload["data"]["message"] == "a"
    assert not bobs.deliveries.exists()


def test_an_oversized_body_goes_without_its_data(alice, settings):
    settings.WEBHOOK_MAX_BODY_BYTES = 1024
    delivery = WebhookDelivery(payload={"event": "artifact.generated", "sequence": 4, "data": {"x": "y" * 5000}})
    body = body_of(delivery)
    assert len(body) < 1024 and '"truncated":true' in body and '"sequence":4' in body


def test_run_cancelled_is_delivered_once_and_a_broken_webhook_never_breaks_a_publish(alice, settings):
    from accounts.services import account_publish

    settings.WEBHOOKS_ALLOW_PRIVATE = True
    hook = webhook_create(user_id=alice.pk, url="http://127.0.0.1/h", events=["run.cancelled", "run.started"])
    campaign = CampaignFactory(owner=alice)
    data = {"campaign_id": campaign.public_id, "run_id": "run_x", "state": "cancelled"}
    publish(campaign, "run.cancelled", {"run_id": "run_x", "requested_by": "alice"})
    account_publish(alice.pk, "run.cancelled", data)
    assert [d.payload.get("stream") for d in hook.deliveries.all()] == [None], "once, the campaign's"
    Webhook.objects.filter(pk=hook.pk).update(events=5)  # a row broken behind the API's back
    account_publish(alice.pk, "run.started", {**data, "state": "planning"})  # still published
    assert campaign.events.count() == 1 and hook.deliveries.count() == 1


def test_an_attempt_recorded_by_another_worker_is_not_overwritten(alice, settings):
    from unittest import mock

    from webhooks import services

    settings.WEBHOOKS_ALLOW_PRIVATE = True
    hook = webhook_create(user_id=alice.pk, url="http://127.0.0.1:9/h", events=["progress"])
    publish(CampaignFactory(owner=alice), "progress", {"percentage": 1, "message": "a"})
    stale = hook.deliveries.get()
    WebhookDelivery.objects.filter(pk=stale.pk).update(status="delivered", attempts=1)  # the other worker's
    with mock.patch.object(services, "_post", return_value=(500, "The receiver answered 500.")):
        services._attempt(stale)
    stale.refresh_from_db()
    assert stale.status == "delivered" and stale.attempts == 1
