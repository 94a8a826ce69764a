"""The Celery application: Redis broker, settings from Django's CELERY_* values."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketing_agents.settings")

app = Celery("marketing_agents")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
