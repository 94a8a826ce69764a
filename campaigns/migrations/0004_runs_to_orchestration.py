# Runs, their steps, artifacts, audits and approvals now belong to the orchestration app
# (orchestration/migrations/0001_initial.py); their tables keep their names and their rows. Their
# content types move with them, so permissions given on them (and the admin's history) carry over.

from django.db import migrations

MOVED = ["orchestrationrun", "runstep", "artifact", "complianceaudit", "approval"]


def move_content_types(apps, schema_editor, old="campaigns", new="orchestration"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model in MOVED:
        if not ContentType.objects.using(db).filter(app_label=new, model=model).exists():
            ContentType.objects.using(db).filter(app_label=old, model=model).update(app_label=new)


def move_content_types_back(apps, schema_editor):
    move_content_types(apps, schema_editor, old="orchestration", new="campaigns")


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0003_campaignevent_to_eventlog"),
        ("contenttypes", "0002_remove_content_type_name"),
        # The event log's last migration that reads the runs table through this app's state.
        ("eventlog", "0002_event_run_public_id"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name='artifact',
                    name='campaign',
                ),
                migrations.RemoveField(
                    model_name='artifact',
                    name='run',
                ),
                migrations.RemoveField(
                    model_name='complianceaudit',
                    name='campaign',
                ),
                migrations.RemoveField(
                    model_name='complianceaudit',
                    name='run',
                ),
                migrations.RemoveField(
                    model_name='orchestrationrun',
                    name='campaign',
                ),
                migrations.RemoveField(
                    model_name='orchestrationrun',
                    name='created_by',
                ),
                migrations.RemoveField(
                    model_name='runstep',
                    name='run',
                ),
                migrations.DeleteModel(
                    name='Approval',
                ),
                migrations.DeleteModel(
                    name='Artifact',
                ),
                migrations.DeleteModel(
                    name='ComplianceAudit',
                ),
                migrations.DeleteModel(
                    name='OrchestrationRun',
                ),
                migrations.DeleteModel(
                    name='RunStep',
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
