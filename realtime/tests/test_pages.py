"""Pages without a browser: links between the admin, the console and the live page; access rules."""

from __future__ import annotations

import re

import pytest

from campaigns.tests.factories import CampaignFactory, RunFactory

pytestmark = pytest.mark.django_db


def test_the_admin_links_to_the_console_and_to_live_pages(client, operator):
    campaign = CampaignFactory()
    run = RunFactory(campaign=campaign, state="generating")
    client.force_login(operator)
    assert 'href="/console/"' in client.get("/admin/").content.decode()
    campaign_page = client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    view_on_site = re.search(r'href="([^"]+)" class="viewsitelink"', campaign_page).group(1)
    assert client.get(view_on_site)["Location"].endswith(f"/campaigns/{campaign.public_id}/")
    run_page = client.get(f"/admin/orchestration/orchestrationrun/{run.pk}/change/").content.decode()
    assert f'href="/campaigns/{campaign.public_id}/"' in run_page


def test_the_console_is_for_staff_only(client, alice, operator):
    CampaignFactory(name="Autumn sale")
    RunFactory(campaign__name="Winter promo", state="generating")
    client.force_login(alice)
    assert client.get("/console/").status_code == 302
    assert client.get("/api/ops/runs/").status_code == 403
    client.force_login(operator)
    page = client.get("/console/")
    assert page.status_code == 200 and "Winter promo" in page.content.decode()
    runs = client.get("/api/ops/runs/").json()["runs"]
    assert [run["campaign_name"] for run in runs] == ["Winter promo"]


def test_the_campaign_list_creates_campaigns_and_shows_errors(client, alice):
    client.force_login(alice)
    empty = client.get("/campaigns/")
    assert "No campaigns yet" in empty.content.decode()
    refused = client.post("/campaigns/", {"name": "", "brief": "x"})
    assert refused.status_code == 200 and "This field is required" in refused.content.decode()
    blank = client.post("/campaigns/", {})  # an empty form is a form with errors, not a fresh one
    assert blank.status_code == 200 and "This field is required" in blank.content.decode()
    created = client.post("/campaigns/", {"name": "Spring", "brief": "A bottle.", "audience": "", "tone": ""})
    assert created.status_code == 302 and created["Location"].startswith("/campaigns/camp_")
    assert "Spring" in client.get("/campaigns/").content.decode()


def test_pages_need_a_login_and_hide_other_users_campaigns(client, alice, bob):
    campaign = CampaignFactory(owner=alice)
    assert client.get(f"/campaigns/{campaign.public_id}/")["Location"].startswith("/accounts/login/")
    client.force_login(bob)
    assert client.get(f"/campaigns/{campaign.public_id}/").status_code == 404
    client.force_login(alice)
    page = client.get(f"/campaigns/{campaign.public_id}/")
    assert page.status_code == 200 and 'id="initial-state"' in page.content.decode()
