# The event log now belongs to the eventlog app (eventlog/migrations/0001_initial.py); the table
# stays, with its data. Its content type moves with it, so the permissions given on events (and the
# admin's history of them) carry over.

from django.db import migrations


def move_content_type(apps, schema_editor, old="campaigns", new="eventlog"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if not ContentType.objects.using(db).filter(app_label=new, model="campaignevent").exists():
        ContentType.objects.using(db).filter(app_label=old, model="campaignevent").update(app_label=new)


def move_content_type_back(apps, schema_editor):
    move_content_type(apps, schema_editor, old="eventlog", new="campaigns")


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0002_runstep_ordering"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("eventlog", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="CampaignEvent")],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
