from __future__ import annotations

from django.conf import settings
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


class StreamKind(models.TextChoices):
    ACCOUNT = "account", "Account"
    OPS = "ops", "Operations"


class Stream(models.Model):
    """A log that is not a campaign's (PROTOCOL.md §11): one per user (``account``: its runs, spend,
    budget alerts and webhook deliveries) and one for operations (``ops``, staff only). Its events
    are numbered from 1 like a campaign's, by the same publisher, and read by the same consumers."""

    kind = models.CharField(max_length=16, choices=StreamKind.choices)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="event_stream"
    )
    # The last sequence handed out; the publisher increments it atomically (as Campaign.last_sequence).
    last_sequence = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind"], condition=Q(kind="ops"), name="one_ops_stream"),
            models.CheckConstraint(
                condition=Q(kind="account", user__isnull=False) | Q(kind="ops", user__isnull=True),
                name="account_streams_have_a_user",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} stream of {self.user}" if self.user_id else f"{self.kind} stream"


class StreamEvent(models.Model):
    """An event of an account or operations stream: the event log's second table, same rules."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="events")
    sequence = models.PositiveBigIntegerField()
    event = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)
    emitted_at = models.DateTimeField()

    class Meta:
        ordering = ["stream", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["stream", "sequence"], name="one_stream_event_per_sequence"),
            models.CheckConstraint(condition=Q(sequence__gte=1), name="stream_event_sequence_positive"),
        ]
        verbose_name = "stream event"

    def __str__(self) -> str:
        return f"#{self.sequence} {self.event}"
