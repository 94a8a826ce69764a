"""The live campaign page and the operators' console."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from campaigns.errors import NotFound
from campaigns.models import Campaign, OrchestrationRun, RunState
from campaigns.selectors import campaign_get_visible, runs_active
from eventlog.models import CampaignEvent
from orchestration.serializers import run_payload
from realtime.api import rest_event
from realtime.presence import presence_overview
from realtime.snapshots import campaign_snapshot


def recent_events(campaign: Campaign, up_to: int, limit: int = 60) -> list[dict[str, Any]]:
    rows = (
        CampaignEvent.objects.filter(campaign=campaign, sequence__lte=up_to)
        .select_related("run")
        .order_by("-sequence")[:limit]
    )
    return [rest_event(row, campaign.public_id) for row in reversed(rows)]


@login_required
def campaign_page(request: HttpRequest, campaign_id: str) -> HttpResponse:
    try:
        campaign = campaign_get_visible(request.user, campaign_id)
    except NotFound:
        raise Http404("Campaign not found") from None
    snapshot = campaign_snapshot(campaign.pk)
    run = campaign.runs.select_related("campaign").order_by("-created_at", "-id").first()
    initial = {
        "snapshot": snapshot,
        "run": run_payload(run) if run else None,
        "events": recent_events(campaign, snapshot["last_event_sequence"]),
    }
    return render(request, "campaigns/live.html", {"campaign": campaign, "initial": initial})


@staff_member_required
def console(request: HttpRequest) -> HttpResponse:
    active = runs_active()
    failures = (
        OrchestrationRun.objects.filter(state=RunState.FAILED).select_related("campaign").order_by("-finished_at")[:20]
    )
    try:
        presence = presence_overview()
    except Exception:
        presence = None
    return render(request, "console.html", {"active": active, "failures": failures, "presence": presence})
