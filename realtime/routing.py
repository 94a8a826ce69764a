"""Routing of the realtime consumers: WebSockets, and the server-sent event streams (HTTP) before
Django's views (every other HTTP request goes to Django)."""

from __future__ import annotations

from typing import Any

from channels.routing import URLRouter
from django.urls import path, re_path

from eventlog.publisher import dumps
from realtime.consumers.base import frame_limit_message
from realtime.consumers.campaign import CampaignConsumer
from realtime.consumers.sessions import AgentHubConsumer, OrchestratorHubConsumer
from realtime.consumers.signalr import SignalRHubConsumer
from realtime.consumers.sse import AccountStreamConsumer, EventStreamConsumer
from realtime.metrics import ERRORS
from realtime.middleware import HandshakeMiddleware
from realtime.signalr import protocol as signalr

websocket_urlpatterns = [
    path("ws/campaigns/", CampaignConsumer.as_asgi()),
    path("hubs/campaign", SignalRHubConsumer.as_asgi()),  # SignalR-compatible (docs/SIGNALR.md)
    path("hubs/orchestrator", OrchestratorHubConsumer.as_asgi()),  # the track-4 hubs
    path("hubs/agent", AgentHubConsumer.as_asgi()),
]

websocket_application = HandshakeMiddleware(URLRouter(websocket_urlpatterns))


def http_application(django_app: Any) -> Any:
    """The event streams (PROTOCOL.md §10, §11) behind the same handshake checks; then Django. A path
    outside the request's root path (daphne takes one from a client's ``Daphne-Root-Path`` header)
    goes straight to Django, which answers it as before, rather than to the router, which would fail."""
    router = URLRouter(
        [
            path("api/campaigns/<str:campaign_id>/stream/", HandshakeMiddleware(EventStreamConsumer.as_asgi())),
            path("api/account/stream/", HandshakeMiddleware(AccountStreamConsumer.as_asgi())),
            re_path(r"", django_app),
        ]
    )

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if not scope.get("path", "").startswith(scope.get("root_path", "")):
            return await django_app(scope, receive, send)
        return await router(scope, receive, send)

    return app


def oversized_frame_notice(path: str) -> str:
    """What a client reads before close 1009 when its frame is over the server's hard limit (the
    frame never reaches a consumer; marketing_agents.serve): what the consumers say for a frame over
    WS_MAX_FRAME_BYTES. Native: a ``message_too_large`` error frame; SignalR: a Close message."""
    ERRORS.labels("message_too_large").inc()
    if path.startswith("/hubs/"):
        return signalr.record({"type": signalr.CLOSE, "error": frame_limit_message()})
    return dumps({"type": "error", "code": "message_too_large", "message": frame_limit_message()})
