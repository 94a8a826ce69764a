# The event log moves from campaigns to its own app: the table (campaigns_campaignevent), its rows
# and its constraints stay as they are; only Django's idea of which app owns the model changes.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("campaigns", "0002_runstep_ordering"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="CampaignEvent",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("sequence", models.PositiveBigIntegerField()),
                        ("event", models.CharField(max_length=64)),
                        ("data", models.JSONField(blank=True, default=dict)),
                        ("emitted_at", models.DateTimeField()),
                        (
                            "campaign",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="events",
                                to="campaigns.campaign",
                            ),
                        ),
                        (
                            "run",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="events",
                                to="campaigns.orchestrationrun",
                            ),
                        ),
                    ],
                    options={
                        "verbose_name": "event",
                        "db_table": "campaigns_campaignevent",
                        "ordering": ["campaign", "sequence"],
                        "constraints": [
                            models.UniqueConstraint(fields=("campaign", "sequence"), name="one_event_per_sequence"),
                            models.CheckConstraint(
                                condition=models.Q(("sequence__gte", 1)), name="event_sequence_positive"
                            ),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
