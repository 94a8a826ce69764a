"""JWT: the token endpoints and bearer access (PROTOCOL.md §3)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from campaigns.models import Campaign
from campaigns.tests.api import (
    CAMPAIGNS,
    alices_campaign,
    detail_url,
    post_json,
)
from campaigns.tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign(alice) -> Campaign:
    return alices_campaign(alice)


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
