from __future__ import annotations

from django.db import models
from django.db.models import Q


class CampaignEvent(models.Model):
    """The durable event log: one row per published event, numbered per campaign from 1.

    The next number lives on the campaign (``Campaign.last_sequence``), so pruning never lets a
    sequence be reused. The table keeps the name it had when the model lived in ``campaigns``."""

    campaign = models.ForeignKey("campaigns.Campaign", on_delete=models.CASCADE, related_name="events")
    sequence = models.PositiveBigIntegerField()
    event = models.CharField(max_length=64)
    # The public id of the run that published it ("" for none): the log names runs as the wire
    # does and knows nothing else of them (runs belong to orchestration, above this app).
    run_public_id = models.CharField("run", max_length=32, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    emitted_at = models.DateTimeField()

    class Meta:
        db_table = "campaigns_campaignevent"
        ordering = ["campaign", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "sequence"], name="one_event_per_sequence"),
            models.CheckConstraint(condition=Q(sequence__gte=1), name="event_sequence_positive"),
        ]
        verbose_name = "event"

    def __str__(self) -> str:
        return f"#{self.sequence} {self.event}"
