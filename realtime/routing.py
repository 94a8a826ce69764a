"""WebSocket routing: the handshake checks, then the consumers."""

from __future__ import annotations

from channels.routing import URLRouter
from django.urls import path

from realtime.consumers.campaign import CampaignConsumer
from realtime.consumers.signalr import SignalRHubConsumer
from realtime.middleware import HandshakeMiddleware

websocket_urlpatterns = [
    path("ws/campaigns/", CampaignConsumer.as_asgi()),
    path("hubs/campaign", SignalRHubConsumer.as_asgi()),  # SignalR-compatible (docs/SIGNALR.md)
]

websocket_application = HandshakeMiddleware(URLRouter(websocket_urlpatterns))
