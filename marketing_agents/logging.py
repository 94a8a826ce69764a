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
