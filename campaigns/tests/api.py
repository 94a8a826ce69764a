"""What the REST API tests share: URLs, request helpers, the stored state of a campaign."""

from __future__ import annotations

import re
from typing import Any

from rest_framework.test import APIClient

from campaigns.models import Campaign
from campaigns.tests.factories import CampaignFactory
from eventlog.publisher import publish

CAMPAIGNS = "/api/campaigns/"
VALID = {"name": "Valid name", "brief": "Valid brief."}
ARTIFACT_FIELDS = {"id", "campaign_id", "run_id", "type", "content", "metadata", "created_at", "agent_name", "version"}
EVENT_FIELDS = {"event", "campaign_id", "run_id", "sequence", "emitted_at", "data"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def detail_url(campaign: Campaign) -> str:
    return f"{CAMPAIGNS}{campaign.public_id}/"


def post_json(client: APIClient, url: str, data: Any) -> Any:
    return client.post(url, data, format="json")


def patch_json(client: APIClient, url: str, data: Any) -> Any:
    return client.patch(url, data, format="json")


def call(client: APIClient, method: str, url: str, data: Any = None) -> Any:
    """A request; a JSON body only for the methods that take one."""
    if method in ("post", "patch", "put"):
        return getattr(client, method)(url, data, format="json")
    return getattr(client, method)(url)


def stored(campaign: Campaign) -> dict[str, Any]:
    """The editable columns of a campaign as they are in the database now."""
    return dict(
        Campaign.objects.filter(pk=campaign.pk).values("name", "brief", "audience", "tone", "settings", "updated_at")[0]
    )


def publish_progress(campaign: Campaign, times: int, run_id: str | None = None) -> None:
    for n in range(times):
        publish(campaign, "progress", {"percentage": 10 * (n + 1), "message": f"step {n + 1}"}, run_id=run_id)


def alices_campaign(alice) -> Campaign:
    return CampaignFactory(owner=alice, name="Alice's launch", settings={"max_tokens": 500})
