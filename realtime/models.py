from __future__ import annotations

from django.conf import settings
from django.db import models


class NoticeLevel(models.TextChoices):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class SystemNotice(models.Model):
    """A message an operator sent to every connected client (kept as a record of what was said)."""

    level = models.CharField(max_length=16, choices=NoticeLevel.choices, default=NoticeLevel.INFO)
    message = models.CharField(max_length=1000)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-sent_at", "-id"]

    def __str__(self) -> str:
        return f"[{self.level}] {self.message[:60]}"
