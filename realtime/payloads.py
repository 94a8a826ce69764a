from __future__ import annotations

from datetime import UTC, datetime

_EMITTED = '"emitted_at":"'


def parse_emitted_at(frame: str) -> float:
    """The POSIX time of a frame's emitted_at, read without parsing the whole JSON."""
    start = frame.find(_EMITTED)
    if start < 0:
        return 0.0
    start += len(_EMITTED)
    text = frame[start : start + 27]
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
