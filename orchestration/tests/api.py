"""What the run API tests share: URLs, requests, the database's view of the runs."""

from __future__ import annotations

import re
from typing import Any

from rest_framework.test import APIClient

from campaigns.models import Campaign
from eventlog.models import CampaignEvent
from orchestration.models import Approval, Artifact, OrchestrationRun, RunStep

PLAN = ["Copy", "ShortCopy", "Visual", "audit"]
AGENTS = ["copywriter", "short_copywriter", "visual_designer", "compliance_auditor"]
GENERATED = {"Copy": "completed", "ShortCopy": "completed", "Visual": "completed"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


# --- helpers ---------------------------------------------------------------------------------------


def runs_url(campaign: Campaign | str) -> str:
    public_id = campaign if isinstance(campaign, str) else campaign.public_id
    return f"/api/campaigns/{public_id}/runs/"


def run_url(run: OrchestrationRun | str, action: str = "") -> str:
    public_id = run if isinstance(run, str) else run.public_id
    return f"/api/runs/{public_id}/{action + '/' if action else ''}"


def approval_url(run: OrchestrationRun | str, approval: Approval | str) -> str:
    public_id = approval if isinstance(approval, str) else approval.public_id
    return f"{run_url(run)}approvals/{public_id}/"


def revisions_url(campaign: Campaign | str, artifact_type: str) -> str:
    public_id = campaign if isinstance(campaign, str) else campaign.public_id
    return f"/api/campaigns/{public_id}/artifacts/{artifact_type}/revisions/"


def post(client: APIClient, url: str, data: Any = None) -> Any:
    return client.post(url, data, format="json")


def events(client: APIClient, campaign: Campaign) -> list[dict[str, Any]]:
    response = client.get(f"/api/campaigns/{campaign.public_id}/events/", {"limit": 1000})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def get_run(client: APIClient, run: OrchestrationRun | str) -> dict[str, Any]:
    response = client.get(run_url(run))
    assert response.status_code == 200, response.content
    return response.json()


def step_of(run_body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(step for step in run_body["steps"] if step["step"] == name)


def database() -> dict[str, Any]:
    """Everything a refused request must leave as it was."""
    return {
        "runs": list(
            OrchestrationRun.objects.order_by("pk").values(
                "public_id", "state", "kind", "settings", "cancel_requested", "cancel_requested_by", "error"
            )
        ),
        "steps": list(RunStep.objects.order_by("pk").values("run_id", "name", "status", "attempt", "instructions")),
        "approvals": list(
            Approval.objects.order_by("pk").values("public_id", "state", "comment", "decided_by", "decided_at")
        ),
        "artifacts": list(Artifact.objects.order_by("pk").values_list("public_id", flat=True)),
        "events": list(CampaignEvent.objects.order_by("pk").values_list("campaign_id", "sequence", "event")),
        "campaigns": list(Campaign.objects.order_by("pk").values("public_id", "last_sequence", "settings")),
    }


def assert_json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and body, body
    return body
