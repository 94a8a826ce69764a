"""ASGI entry point for daphne: WebSockets and the event streams to the Channels routing, other HTTP to Django."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketing_agents.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from realtime.routing import http_application, websocket_application  # noqa: E402

application = ProtocolTypeRouter({"http": http_application(django_asgi_app), "websocket": websocket_application})
