"""The event log's migrations keep every stored event and what it says (the tables predate the app)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

NOW = "2026-11-30T00:00Z"


def test_events_keep_their_run_when_the_foreign_key_becomes_the_runs_public_id(migrator):
    old = migrator.apply_initial_migration(("eventlog", "0001_initial"))
    User = old.apps.get_model("auth", "User")
    Campaign = old.apps.get_model("campaigns", "Campaign")
    Run = old.apps.get_model("campaigns", "OrchestrationRun")
    Event = old.apps.get_model("eventlog", "CampaignEvent")
    owner = User.objects.create(username="alice")
    campaign = Campaign.objects.create(public_id="cmp_1", owner=owner, name="Launch", brief="Bottles")
    run = Run.objects.create(public_id="run_abc", campaign=campaign)
    for sequence, event_run in ((1, run), (2, None), (3, run)):
        Event.objects.create(
            campaign=campaign, sequence=sequence, event="progress", run=event_run, data={}, emitted_at=NOW
        )

    new = migrator.apply_tested_migration(("eventlog", "0002_event_run_public_id"))

    Event = new.apps.get_model("eventlog", "CampaignEvent")
    stored = list(Event.objects.order_by("sequence").values_list("sequence", "run_public_id"))
    assert stored == [(1, "run_abc"), (2, ""), (3, "run_abc")]


def test_the_run_foreign_key_comes_back_when_migrated_backwards(migrator):
    new = migrator.apply_initial_migration(("eventlog", "0002_event_run_public_id"))
    User = new.apps.get_model("auth", "User")
    Campaign = new.apps.get_model("campaigns", "Campaign")
    Run = new.apps.get_model("campaigns", "OrchestrationRun")
    Event = new.apps.get_model("eventlog", "CampaignEvent")
    campaign = Campaign.objects.create(
        public_id="cmp_1", owner=User.objects.create(username="alice"), name="Launch", brief="Bottles"
    )
    run = Run.objects.create(public_id="run_abc", campaign=campaign)
    Event.objects.create(
        campaign=campaign, sequence=1, event="progress", run_public_id="run_abc", data={}, emitted_at=NOW
    )

    old = migrator.apply_tested_migration(("eventlog", "0001_initial"))

    Event = old.apps.get_model("eventlog", "CampaignEvent")
    assert Event.objects.get().run_id == run.pk
