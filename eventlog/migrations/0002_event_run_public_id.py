# An event names its run by the run's public id, as the wire does, instead of a foreign key to the
# run's table: the event log sits below orchestration and knows nothing of runs. Every stored
# event keeps its run (copied here); an event whose run is deleted keeps the id it was published
# with.

from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def copy_run_ids(apps, schema_editor):
    CampaignEvent = apps.get_model("eventlog", "CampaignEvent")
    OrchestrationRun = apps.get_model("campaigns", "OrchestrationRun")
    db = schema_editor.connection.alias
    public_id = OrchestrationRun.objects.using(db).filter(pk=OuterRef("run_id")).values("public_id")[:1]
    CampaignEvent.objects.using(db).filter(run__isnull=False).update(run_public_id=Subquery(public_id))


def copy_run_ids_back(apps, schema_editor):
    CampaignEvent = apps.get_model("eventlog", "CampaignEvent")
    OrchestrationRun = apps.get_model("campaigns", "OrchestrationRun")
    db = schema_editor.connection.alias
    pk = OrchestrationRun.objects.using(db).filter(public_id=OuterRef("run_public_id")).values("pk")[:1]
    CampaignEvent.objects.using(db).exclude(run_public_id="").update(run=Subquery(pk))


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0003_campaignevent_to_eventlog"),
        ("eventlog", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="campaignevent",
            name="run_public_id",
            field=models.CharField(blank=True, default="", max_length=32, verbose_name="run"),
        ),
        migrations.RunPython(copy_run_ids, copy_run_ids_back, elidable=False),
        migrations.RemoveField(model_name="campaignevent", name="run"),
    ]
