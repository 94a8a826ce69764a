"""API keys (PROTOCOL.md §13): made, listed and revoked by their owner; stored hashed; usable on
REST, the native WebSocket and the SignalR hub; a revoked key's sockets are closed (4401) within 5 s."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_revoke
from campaigns.tests.factories import PASSWORD, CampaignFactory


def test_a_key_is_shown_once_stored_hashed_listed_without_it_and_revoked(alice_api):
    created = alice_api.post("/api/keys/", {"name": "nightly export"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "name", "key", "created_at", "last_used_at"}
    assert body["id"].startswith("key_") and body["name"] == "nightly export" and body["last_used_at"] is None
    stored = ApiKey.objects.get(public_id=body["id"])
    assert body["key"] not in {stored.pk, stored.hashed_key} and body["key"].split(".")[1] not in stored.hashed_key
    listed = alice_api.get("/api/keys/").json()
    assert listed["count"] == 1 and set(listed["results"][0]) == {"id", "name", "created_at", "last_used_at"}
    assert alice_api.delete(f"/api/keys/{body['id']}/").status_code == 204
    assert alice_api.get("/api/keys/").json()["count"] == 0
    answer = alice_api.delete(f"/api/keys/{body['id']}/")
    assert answer.status_code == 404 and answer.json() == {"detail": "API key not found."}


def test_bob_never_sees_nor_revokes_alices_keys(alice, alice_api, bob_api):
    key, _ = api_key_create(user_id=alice.pk, name="alice's")
    assert bob_api.get("/api/keys/").json()["count"] == 0
    assert bob_api.delete(f"/api/keys/{key.public_id}/").status_code == 404
    key.refresh_from_db()
    assert not key.revoked


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "   "}, {"name": "x" * 51}, {"name": 7}, {"name": ["a"]}])
def test_a_bad_name_is_a_clear_error_and_makes_no_key(alice_api, body):
    answer = alice_api.post("/api/keys/", body, format="json")
    assert answer.status_code == 400
    assert "name" in answer.json() or "detail" in answer.json()
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("scheme", ["Api-Key", "Bearer"])
def test_a_key_acts_as_its_owner_on_rest_until_revoked(alice, bob, scheme):
    mine, theirs = CampaignFactory(owner=alice), CampaignFactory(owner=bob)
    key, secret = api_key_create(user_id=alice.pk, name="ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {secret}")
    answer = client.get("/api/campaigns/")
    assert answer.status_code == 200
    assert [c["id"] for c in answer.json()["results"]] == [mine.public_id]
    assert client.get(f"/api/campaigns/{theirs.public_id}/").status_code == 404
    key.refresh_from_db()
    assert key.last_used_at is not None
    api_key_revoke(key)
    refused = client.get("/api/campaigns/")
    assert refused.status_code == 401 and refused.json() == {"detail": "Invalid or revoked API key."}


@pytest.mark.parametrize(
    "credential",
    [
        "Api-Key nonsense",
        "Api-Key abcdefgh.wrongsecret",
        "Bearer abcdefgh.wrong",
        "Api-Key abcdefg\x00.xyz",
        "Api-Key ",
    ],
)
def test_a_wrong_key_is_401_json(db, credential):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=credential)
    answer = client.get("/api/campaigns/")
    assert answer.status_code == 401 and set(answer.json()) == {"detail"}


def test_jwts_still_work_beside_keys(alice):
    token = APIClient().post("/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.json()['access']}")
    assert client.get("/api/account/").status_code == 200
