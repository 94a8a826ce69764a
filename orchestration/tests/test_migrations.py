"""Moving runs and their parts from campaigns to orchestration keeps every row and every permission."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_runs_keep_their_rows_and_content_types_when_they_move_to_orchestration(migrator):
    old = migrator.apply_initial_migration(
        [("campaigns", "0003_campaignevent_to_eventlog"), ("eventlog", "0002_event_run_public_id")]
    )
    ContentType = old.apps.get_model("contenttypes", "ContentType")
    Permission = old.apps.get_model("auth", "Permission")
    User = old.apps.get_model("auth", "User")
    Campaign = old.apps.get_model("campaigns", "Campaign")
    Run = old.apps.get_model("campaigns", "OrchestrationRun")
    Artifact = old.apps.get_model("campaigns", "Artifact")
    run_type = ContentType.objects.get_or_create(app_label="campaigns", model="orchestrationrun")[0]
    cancel = Permission.objects.create(content_type=run_type, codename="change_orchestrationrun", name="Can change")
    operator = User.objects.create(username="operator")
    operator.user_permissions.add(cancel)
    campaign = Campaign.objects.create(public_id="cmp_1", owner=operator, name="Launch", brief="Bottles")
    run = Run.objects.create(public_id="run_abc", campaign=campaign, state="completed")
    Artifact.objects.create(public_id="art_1", campaign=campaign, run=run, type="Copy", content="Hi", agent_name="a")

    new = migrator.apply_tested_migration(("orchestration", "0001_initial"))

    Run = new.apps.get_model("orchestration", "OrchestrationRun")
    Artifact = new.apps.get_model("orchestration", "Artifact")
    ContentType = new.apps.get_model("contenttypes", "ContentType")
    User = new.apps.get_model("auth", "User")
    assert Run.objects.get().public_id == "run_abc"
    assert Artifact.objects.get().run.public_id == "run_abc"
    assert ContentType.objects.get(pk=run_type.pk).app_label == "orchestration"
    granted = User.objects.get(username="operator").user_permissions.get()
    assert (granted.content_type.app_label, granted.codename) == ("orchestration", "change_orchestrationrun")
