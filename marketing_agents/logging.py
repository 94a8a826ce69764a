"""Log filter that keeps credentials out of every log line."""

from __future__ import annotations

import logging
import re

_PATTERNS = [
    # access_token=..., token=..., password=... in query strings and form bodies
    (re.compile(r"(?i)\b(access_token|refresh|token|password|api_key|id)=([^&\s\"']+)"), r"\1=[redacted]"),
    # Authorization: Bearer xxx
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-_.~+/=]+"), r"\1[redacted]"),
    # credentials inside URLs: scheme://user:password@host
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1[redacted]@"),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class OutageFilter(logging.Filter):
    """An unreachable Redis is an outage, not a bug: channels_redis' pub/sub receive loop logs it with
    a full traceback every second until Redis is back. Those records become one-line warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.startswith("channels_redis"):
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.exceptions import TimeoutError as RedisTimeoutError

            error = record.exc_info[1]
            if isinstance(error, (RedisConnectionError, RedisTimeoutError, ConnectionError)):
                record.msg = f"channel layer: Redis unreachable ({type(error).__name__}); retrying"
                record.args, record.exc_info, record.exc_text = None, None, None
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
