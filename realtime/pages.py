"""The pages: the campaign list with its form, the live campaign page and the operators' console."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from campaigns.errors import NotFound
from campaigns.models import Campaign
from campaigns.selectors import campaign_get_visible
from campaigns.services import campaign_create
from eventlog.models import CampaignEvent, StreamEvent
from eventlog.publisher import stream_frame
from eventlog.services import account_stream, ops_stream
from orchestration.health import providers_health
from orchestration.models import OrchestrationRun, RunState
from orchestration.payloads import run_payload
from orchestration.selectors import campaigns_with_latest_run, runs_active
from realtime.api import rest_event
from realtime.presence import presence_overview
from realtime.snapshots import campaign_snapshot, consistent_read, stream_snapshot

OPS_EVENTS_SHOWN = 20


class CampaignForm(forms.ModelForm):
    class Meta:
        model = Campaign
        fields = ["name", "brief", "audience", "tone"]
        widgets = {"brief": forms.Textarea(attrs={"rows": 5})}
        help_texts = {
            "brief": "What are we promoting, to whom, and why? Up to 20,000 characters.",
            "tone": "For example friendly, professional, playful, bold, calm.",
        }


@login_required
def campaign_list(request: HttpRequest) -> HttpResponse:
    form = CampaignForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            campaign = campaign_create(owner=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return redirect("campaign-page", campaign_id=campaign.public_id)
    campaigns = campaigns_with_latest_run(request.user)[:100]
    return render(request, "campaigns/list.html", {"form": form, "campaigns": campaigns})


def recent_events(campaign: Campaign, up_to: int, limit: int = 60) -> list[dict[str, Any]]:
    rows = CampaignEvent.objects.filter(campaign=campaign, sequence__lte=up_to).order_by("-sequence")[:limit]
    return [rest_event(row, campaign.public_id) for row in reversed(rows)]


# What the conversation panel shows of a run started by a message: the message, then its answer.
CONVERSATION_EVENTS = (
    "agent.message",
    "artifact.generated",
    "compliance.completed",
    "generation.failed",
    "run.cancelled",
)
CONVERSATION_MESSAGES = 30


def conversation(campaign: Campaign, up_to: int) -> list[dict[str, Any]]:
    """The last messages to the campaign's agents with the events that answered them, in order (the
    live page's conversation panel replays them, then follows the socket)."""
    events = CampaignEvent.objects.filter(campaign=campaign, sequence__lte=up_to)
    messages = list(events.filter(event="agent.message").order_by("-sequence")[:CONVERSATION_MESSAGES])
    if not messages:
        return []
    runs = {row.run_public_id for row in messages}
    first = min(row.sequence for row in messages)
    rows = events.filter(event__in=CONVERSATION_EVENTS, run_public_id__in=runs, sequence__gte=first).order_by(
        "sequence"
    )
    return [rest_event(row, campaign.public_id) for row in rows]


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
        "conversation": conversation(campaign, snapshot["last_event_sequence"]),
        # The viewer's own account: this month's spend against the budget, kept live by its stream.
        "account": stream_snapshot(account_stream(request.user.pk).pk),
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
    stream = ops_stream()
    with consistent_read():  # the events shown and the position the page resumes from, in one view
        recent = list(StreamEvent.objects.filter(stream=stream).order_by("-sequence")[:OPS_EVENTS_SHOWN])
        last_sequence = type(stream).objects.values_list("last_sequence", flat=True).get(pk=stream.pk)
    ops = {
        "last_sequence": last_sequence,
        "events": [stream_frame(event, stream_kind="ops") for event in reversed(recent)],
    }
    context = {
        "active": active,
        "failures": failures,
        "presence": presence,
        "providers": providers_health(),
        "ops": ops,
    }
    return render(request, "console.html", context)
