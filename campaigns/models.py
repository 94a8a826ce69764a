"""Campaigns: what a marketing team asks for (runs, artifacts and audits are orchestration's)."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.db import models
from django.urls import reverse

from campaigns import ids
from campaigns.validation import validate_settings

NAME_MAX_LENGTH = 200
BRIEF_MAX_LENGTH = 20_000
AUDIENCE_MAX_LENGTH = 1_000
TONE_MAX_LENGTH = 100


class Campaign(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=ids.campaign_id, editable=False)
    owner = models.ForeignKey(django_settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    brief = models.TextField(max_length=BRIEF_MAX_LENGTH)
    audience = models.CharField(max_length=AUDIENCE_MAX_LENGTH, blank=True)
    tone = models.CharField(max_length=TONE_MAX_LENGTH, blank=True)
    settings = models.JSONField(default=dict, blank=True, validators=[validate_settings])
    # The last event sequence handed out for this campaign; the publisher increments it atomically.
    last_sequence = models.PositiveBigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.public_id})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # last_sequence belongs to the publisher alone (an atomic UPDATE … RETURNING). A save of an
        # instance loaded earlier (an admin form, a service) must not write back a stale value, or
        # the next event would reuse a sequence.
        if self.pk is not None and not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name != "last_sequence"
            ]
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        """The live campaign page (the admin's "View on site")."""
        return reverse("campaign-page", args=[self.public_id])
