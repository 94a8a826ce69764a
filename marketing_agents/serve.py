"""Run daphne with this project's defaults and an access log that never shows a token.

    python -m marketing_agents.serve [-b 127.0.0.1] [-p 8000] [daphne options…]

daphne's own access log prints each request's path with its query string, and browsers and
SignalR clients put ``access_token`` there; this swaps in a log line with secrets redacted. WebSocket
pings every WS_PING_INTERVAL_SECONDS, and a connection that answers nothing for
WS_IDLE_TIMEOUT_SECONDS is closed (PROTOCOL.md §5).
"""

from __future__ import annotations

import os
import sys

import daphne.cli
from daphne.access import AccessLogGenerator

from marketing_agents.logging import redact


class RedactedAccessLog(AccessLogGenerator):
    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None) -> None:
        super().write_entry(host, date, redact(request), status, length, ident, user)


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketing_agents.settings")
    import django
    from django.conf import settings

    django.setup()
    daphne.cli.AccessLogGenerator = RedactedAccessLog
    defaults = [
        "--ping-interval",
        str(settings.WS_PING_INTERVAL_SECONDS),
        "--ping-timeout",
        str(settings.WS_IDLE_TIMEOUT_SECONDS),
        "--websocket-max-message-size",
        str(max(settings.WS_MAX_FRAME_BYTES * 2, 1 << 20)),
        "--application-close-timeout",
        "5",
    ]
    daphne.cli.CommandLineInterface().run([*defaults, *argv, "marketing_agents.asgi:application"])


if __name__ == "__main__":
    main(sys.argv[1:])
