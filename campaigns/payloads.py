"""How times are written on the wire (REST answers, events, snapshots): one format everywhere."""

from __future__ import annotations

from datetime import UTC, datetime

# Microseconds always present and UTC spelled "Z": 2026-11-22T03:40:00.123456Z
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def isoformat(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime(DATETIME_FORMAT)
