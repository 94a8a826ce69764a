"""The OpenAPI schema and the docs page (marketing_agents/urls.py)."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.django_db


# --- Schema, docs, health --------------------------------------------------------------------------


def test_openapi_schema_lists_the_campaign_paths(alice_api):
    response = alice_api.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    assert {
        "/api/campaigns/",
        "/api/campaigns/{campaign_id}/",
        "/api/campaigns/{campaign_id}/artifacts/",
        "/api/campaigns/{campaign_id}/snapshot/",
        "/api/campaigns/{campaign_id}/events/",
        "/api/auth/token/",
        "/api/auth/token/refresh/",
    } <= paths
    assert {"get", "post"} <= set(schema["paths"]["/api/campaigns/"])
    assert {"get", "patch", "delete"} <= set(schema["paths"]["/api/campaigns/{campaign_id}/"])


def test_openapi_schema_default_is_yaml(alice_api):
    response = alice_api.get("/api/schema/")

    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")


ASSET_URL = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def test_docs_page_uses_only_local_assets(alice_api):
    response = alice_api.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "http://" not in html and "https://" not in html
    urls = ASSET_URL.findall(html)
    assert urls, html
    for url in urls:
        assert not re.match(r"^(https?:)?//", url, re.IGNORECASE), url
        assert url.startswith("/"), url
    static = [u for u in urls if u.startswith("/static/")]
    assert any(u.endswith(".js") for u in static) and any(u.endswith(".css") for u in static), urls
    assert all(u.startswith("/static/") or u.startswith("/api/docs/") for u in urls), urls


def test_docs_assets_are_served(alice_api):
    html = alice_api.get("/api/docs/").content.decode()

    for url in ASSET_URL.findall(html):
        response = alice_api.get(url)
        assert response.status_code == 200, url
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert body, url
