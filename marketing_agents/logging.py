"""Log filters: credentials never appear in a log line; a client's mistake or an outage is one line,
never a traceback."""

from __future__ import annotations

import logging
import re

_PATTERNS = [
    # access_token=..., token=..., password=... in query strings and form bodies
    (re.compile(r"(?i)\b(access_token|refresh|token|password|api_key|id)=([^&\s\"']+)"), r"\1=[redacted]"),
    # Authorization: Bearer xxx, Authorization: Api-Key xxx
    (re.compile(r"(?i)((?:bearer|api-key)\s+)[A-Za-z0-9\-_.~+/=]+"), r"\1[redacted]"),
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


class ClientErrorFilter(logging.Filter):
    """A client's mistake is not a bug: Django logs a bad Host header, a malformed multipart body or
    another suspicious request (``django.security.*``, and ``django.request`` with a 4xx) with the
    exception's traceback, so anyone could fill the log and trip error alerts with one bad request.
    Those records become one-line warnings that keep Django's message (the status and the path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        client_error = record.name.startswith("django.security") or (
            record.name == "django.request" and getattr(record, "status_code", 500) < 500
        )
        if client_error and (record.exc_info or record.levelno > logging.WARNING):
            if record.exc_info and record.exc_info[1] is not None:
                record.msg = f"{record.getMessage()} ({type(record.exc_info[1]).__name__})"
                record.args = None
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
