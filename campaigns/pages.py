"""Server-rendered pages: the campaign list with its form (the live page is realtime.pages)."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from campaigns import selectors, services
from campaigns.models import Campaign


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
            campaign = services.campaign_create(owner=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return redirect("campaign-page", campaign_id=campaign.public_id)
    campaigns = selectors.campaigns_visible_to(request.user)[:100]
    return render(request, "campaigns/list.html", {"form": form, "campaigns": campaigns})
