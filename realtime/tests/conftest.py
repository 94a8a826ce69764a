"""Fixtures of the realtime tests."""

from __future__ import annotations

import asyncio

import pytest
from channels.testing import WebsocketCommunicator
from django.db import connections

from campaigns.tests.factories import UserFactory
from marketing_agents.asgi import application
from realtime.tests.sockets import PATH, db, stop_hub, token_for


@pytest.fixture
async def ws(transactional_db):
    """Opens WebSocket connections through the real ASGI application; disconnects them afterwards."""
    opened: list[WebsocketCommunicator] = []

    async def open_ws(
        user=None,
        *,
        token: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> WebsocketCommunicator:
        path = PATH
        if user is not None:
            token = token_for(user)
        if token is not None:
            path += f"?access_token={token}"
        comm = WebsocketCommunicator(application, path, headers=headers or [])
        opened.append(comm)
        connected, _ = await comm.connect(timeout=5)
        assert connected, "the handshake was refused"
        return comm

    yield open_ws

    for comm in opened:
        try:
            await comm.disconnect(timeout=2)
        except (Exception, asyncio.CancelledError):  # already finished, or cancelled by a receive timeout
            pass
    await stop_hub()
    await db(connections.close_all)()


@pytest.fixture
def users(transactional_db):
    return {
        "alice": UserFactory(username="alice"),
        "bob": UserFactory(username="bob"),
        "operator": UserFactory(username="charlie", is_staff=True, is_superuser=True),
    }
