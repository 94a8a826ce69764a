"""The operators' admin, as an operator's browser sees it."""

from __future__ import annotations

import re

import pytest
from django.db.models import Model
from django.test import Client

from campaigns.tests.factories import ArtifactFactory, AuditFactory, CampaignFactory, RunFactory
from eventlog.models import CampaignEvent
from eventlog.publisher import publish
from orchestration.models import Approval, RunState

pytestmark = pytest.mark.django_db

MODELS = ["campaign", "orchestrationrun", "artifact", "complianceaudit", "approval", "campaignevent"]


APP_OF = {"campaign": "campaigns", "campaignevent": "eventlog"}  # every other model is orchestration's


def changelist_url(model: str) -> str:
    return f"/admin/{APP_OF.get(model, 'orchestration')}/{model}/"


def change_url(obj: Model) -> str:
    return f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/{obj.pk}/change/"


@pytest.fixture
def objects(alice) -> dict[str, Model]:
    campaign = CampaignFactory(owner=alice, name="Bottle launch", tone="friendly", settings={"max_tokens": 500})
    run = RunFactory(campaign=campaign, state=RunState.COMPLETED, settings={"require_approval": True})
    artifact = ArtifactFactory(run=run, type="Copy")
    audit = AuditFactory(
        run=run, issues=[{"artifact_type": "Copy", "issue_description": "Vague claim.", "severity": "Medium"}]
    )
    approval = Approval.objects.create(run=run, step="Copy", reason="Operator review requested.")
    publish(campaign, "progress", {"percentage": 50, "message": "half way"}, run_id=run.public_id)
    event = CampaignEvent.objects.get(campaign=campaign)
    return {
        "campaign": campaign,
        "orchestrationrun": run,
        "artifact": artifact,
        "complianceaudit": audit,
        "approval": approval,
        "campaignevent": event,
    }


def test_admin_index_lists_every_model(operator_client):
    response = operator_client.get("/admin/")

    assert response.status_code == 200
    html = response.content.decode()
    for model in MODELS:
        assert f'href="{changelist_url(model)}"' in html, model


@pytest.mark.parametrize("model", MODELS)
def test_every_changelist_loads(operator_client, objects, model):
    response = operator_client.get(changelist_url(model))

    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


@pytest.mark.parametrize("model", MODELS)
def test_every_empty_changelist_loads(operator_client, model):
    response = operator_client.get(changelist_url(model))

    assert response.status_code == 200
    assert response.context["cl"].result_count == 0


@pytest.mark.parametrize("model", MODELS)
def test_every_change_page_loads(operator_client, objects, model):
    obj = objects[model]

    response = operator_client.get(change_url(obj))

    assert response.status_code == 200
    assert response.context["original"] == obj


def test_campaign_change_page_shows_its_runs(operator_client, objects):
    response = operator_client.get(change_url(objects["campaign"]))

    assert objects["orchestrationrun"].public_id in response.content.decode()


def test_run_change_page_shows_its_artifacts_approvals_and_events(operator_client, objects):
    html = operator_client.get(change_url(objects["orchestrationrun"])).content.decode()

    assert objects["artifact"].public_id in html
    assert objects["approval"].public_id in html
    assert "half way" in html


def test_the_run_page_links_to_exactly_its_events_in_the_log(operator_client, objects):
    run = objects["orchestrationrun"]
    publish(run.campaign, "progress", {"percentage": 60, "message": "another run's"}, run_id="run_other")
    html = operator_client.get(change_url(run)).content.decode()
    link = re.search(r'href="(/admin/eventlog/campaignevent/\?[^"]+)"', html).group(1).replace("&amp;", "&")

    response = operator_client.get(link)

    assert response.status_code == 200
    assert [event.data["message"] for event in response.context["cl"].result_list] == ["half way"]


def test_campaign_add_page_loads(operator_client):
    response = operator_client.get("/admin/campaigns/campaign/add/")

    assert response.status_code == 200
    assert 'name="name"' in response.content.decode()


def test_campaign_admin_refuses_bad_settings(operator_client, objects):
    campaign = objects["campaign"]
    form = {
        "owner": campaign.owner_id,
        "name": campaign.name,
        "brief": campaign.brief,
        "audience": campaign.audience,
        "tone": campaign.tone,
        "settings": '{"colour": "blue"}',
        "runs-TOTAL_FORMS": "1",
        "runs-INITIAL_FORMS": "1",
        "runs-MIN_NUM_FORMS": "0",
        "runs-MAX_NUM_FORMS": "1000",
        "runs-0-id": objects["orchestrationrun"].pk,
        "runs-0-campaign": campaign.pk,
    }

    response = operator_client.post(change_url(campaign), form)

    assert response.status_code == 200
    assert "colour" in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.settings == {"max_tokens": 500}


def test_run_changelist_search(operator_client, objects):
    other = RunFactory(campaign=CampaignFactory(name="Coffee promo"), state=RunState.FAILED)
    wanted = objects["orchestrationrun"]

    for query in (wanted.public_id, "Bottle launch", wanted.campaign.public_id):
        response = operator_client.get(changelist_url("orchestrationrun"), {"q": query})
        assert response.status_code == 200
        assert list(response.context["cl"].result_list) == [wanted], query
        html = response.content.decode()
        assert wanted.public_id in html and other.public_id not in html

    nothing = operator_client.get(changelist_url("orchestrationrun"), {"q": "no such run"})
    assert nothing.context["cl"].result_count == 0


def test_run_changelist_filter_by_state(operator_client, objects):
    failed = RunFactory(campaign=CampaignFactory(), state=RunState.FAILED)

    response = operator_client.get(changelist_url("orchestrationrun"), {"state__exact": "failed"})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [failed]
    html = response.content.decode()
    assert failed.public_id in html and objects["orchestrationrun"].public_id not in html


def test_run_changelist_date_drilldown(operator_client, objects):
    run = objects["orchestrationrun"]
    year = run.created_at.year

    this_year = operator_client.get(changelist_url("orchestrationrun"), {"created_at__year": year})
    other_year = operator_client.get(changelist_url("orchestrationrun"), {"created_at__year": year - 1})

    assert this_year.status_code == 200
    assert list(this_year.context["cl"].result_list) == [run]
    assert other_year.status_code == 200
    assert other_year.context["cl"].result_count == 0


def test_campaign_changelist_search_by_owner(operator_client, objects, bob):
    CampaignFactory(owner=bob, name="Bob's promo")

    response = operator_client.get(changelist_url("campaign"), {"q": "alice"})

    assert list(response.context["cl"].result_list) == [objects["campaign"]]


def test_event_admin_is_read_only(operator_client, objects):
    event = objects["campaignevent"]
    url = changelist_url("campaignevent")

    assert operator_client.get(f"{url}add/").status_code == 403
    assert operator_client.get(f"{url}{event.pk}/delete/").status_code == 403
    change = operator_client.get(change_url(event))
    assert change.status_code == 200
    assert not change.context["has_change_permission"]
    assert not change.context["has_delete_permission"]
    assert 'name="_save"' not in change.content.decode()
    assert operator_client.post(change_url(event), {"event": "tampered", "sequence": 99}).status_code == 403
    listing = operator_client.get(url).content.decode()
    assert f'href="{url}add/"' not in listing
    event.refresh_from_db()
    assert (event.event, event.sequence) == ("progress", 1)


def test_event_admin_offers_no_bulk_delete(operator_client, objects):
    event = objects["campaignevent"]

    operator_client.post(
        changelist_url("campaignevent"), {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"}
    )

    assert CampaignEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.parametrize("model", ["orchestrationrun", "artifact", "complianceaudit", "approval"])
def test_records_made_by_the_system_cannot_be_added_by_hand(operator_client, model):
    assert operator_client.get(f"{changelist_url(model)}add/").status_code == 403


@pytest.mark.parametrize("path", ["/admin/", "/admin/campaigns/campaign/", "/admin/eventlog/campaignevent/"])
def test_non_staff_user_is_sent_to_the_login_page(alice, path):
    client = Client()
    client.force_login(alice)

    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert f"next={path}" in response["Location"]


def test_anonymous_is_sent_to_the_login_page():
    response = Client().get("/admin/orchestration/orchestrationrun/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_an_operator_deletes_a_finished_campaign_with_its_history(operator_client, objects):
    campaign = objects["campaign"]  # a completed run, an artifact, an audit, an approval, an event
    url = f"/admin/campaigns/campaign/{campaign.pk}/delete/"

    confirm = operator_client.get(url)
    assert confirm.status_code == 200
    assert "Are you sure" in confirm.content.decode(), "the admin refused: " + confirm.content.decode()[:500]

    response = operator_client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not type(campaign).objects.filter(pk=campaign.pk).exists()
    assert not CampaignEvent.objects.filter(campaign_id=campaign.pk).exists()


def test_the_bulk_delete_action_deletes_finished_campaigns(operator_client, objects, alice):
    finished, other = objects["campaign"], CampaignFactory(owner=alice)
    data = {"action": "delete_selected", "_selected_action": [finished.pk, other.pk], "post": "yes"}

    response = operator_client.post(changelist_url("campaign"), data)

    assert response.status_code == 302
    assert not type(finished).objects.filter(pk__in=[finished.pk, other.pk]).exists()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("/admin/campaigns/orchestrationrun/?state=failed", "/admin/orchestration/orchestrationrun/?state=failed"),
        ("/admin/campaigns/artifact/7/change/", "/admin/orchestration/artifact/7/change/"),
        ("/admin/campaigns/approval/", "/admin/orchestration/approval/"),
        ("/admin/campaigns/campaignevent/", "/admin/eventlog/campaignevent/"),
    ],
)
def test_admin_pages_of_models_that_left_the_campaigns_app_redirect_to_their_new_place(operator_client, old, new):
    response = operator_client.get(old)

    assert response.status_code == 301
    assert response["Location"] == new
