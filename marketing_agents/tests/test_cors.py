"""CORS on the API (marketing_agents/settings.py)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from campaigns.models import Campaign
from campaigns.tests.api import (
    CAMPAIGNS,
    alices_campaign,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign(alice) -> Campaign:
    return alices_campaign(alice)


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
