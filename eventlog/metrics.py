"""The event log's metrics (see realtime.metrics for how processes add them up on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

EVENTS_PUBLISHED = Counter("realtime_events_published", "Events published, by event type.", ["event"])
