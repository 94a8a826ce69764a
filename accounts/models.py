"""A user's account: its monthly budget, and its spend rolled up per calendar month (UTC)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey

from campaigns import ids

BUDGET_THRESHOLDS = (50, 80, 100)  # percent of the monthly budget; each is alerted once a month


class Account(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account")
    # None: no budget. Runs are refused once the month's spend reaches it.
    monthly_budget = models.DecimalField(
        max_digits=16, decimal_places=6, null=True, blank=True, validators=[MinValueValidator(Decimal("0"))]
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"account of {self.user}"


class MonthlySpend(models.Model):
    """What a user's runs cost in one calendar month (UTC), as the runs report it.

    ``announced_*`` is what the last ``spend.updated`` said: the event is published at most once a
    second per user, so a report within the second of the last one waits for the flush task."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="monthly_spend")
    period = models.DateField(help_text="The first day of the month (UTC).")
    spend = models.DecimalField(max_digits=16, decimal_places=6, default=Decimal(0))
    announced_spend = models.DecimalField(max_digits=16, decimal_places=6, default=Decimal(0))
    announced_at = models.DateTimeField(null=True, blank=True)
    flush_queued_at = models.DateTimeField(null=True, blank=True)
    # The highest threshold (percent of the budget) alerted this month; 0 for none.
    alerted_threshold = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-period", "user"]
        constraints = [models.UniqueConstraint(fields=["user", "period"], name="one_spend_row_per_month")]
        verbose_name_plural = "monthly spend"

    def __str__(self) -> str:
        return f"{self.user} {self.period:%Y-%m}: {self.spend}"


def key_id() -> str:
    return ids.new_id("key")


class ApiKey(AbstractAPIKey):
    """A key a program uses instead of a user's token (PROTOCOL.md §13): it acts as its owner, works
    wherever a JWT does, never expires on its own, and is stored hashed (djangorestframework-api-key:
    the key is shown once, at creation; a revoked key stays revoked)."""

    public_id = models.CharField(max_length=32, unique=True, default=key_id, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(AbstractAPIKey.Meta):
        ordering = ["-created"]
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def __str__(self) -> str:
        return f"{self.name} ({self.public_id})"
