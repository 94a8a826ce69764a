"""Fixtures of the realtime tests."""

from __future__ import annotations

import asyncio

import pytest
from channels.testing import WebsocketCommunicator
from django.db import connections

from campaigns.tests.factories import UserFactory
from marketing_agents.asgi import application
from realtime.signalr import http as signalr
from realtime.signalr.http import connection_token
from realtime.tests import hubs
from realtime.tests.hubs import HANDSHAKE, Hub
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


@pytest.fixture
async def hub(transactional_db):
    opened: list[WebsocketCommunicator] = []

    async def open_hub(user=None, *, path: str | None = None, handshake: bool = True) -> Hub:
        if path is None:
            path = f"{hubs.PATH}?id={connection_token(signalr.new_connection_id())}"
            if user is not None:
                path += f"&access_token={hubs.token_for(user)}"
        comm = WebsocketCommunicator(application, path)
        opened.append(comm)
        connected, _ = await comm.connect(timeout=5)
        assert connected, "the WebSocket was refused"
        connection = Hub(comm)
        if handshake:
            await connection.send(HANDSHAKE)
            assert await connection.next() == {}
        return connection

    yield open_hub

    for comm in opened:
        try:
            await comm.disconnect(timeout=2)
        except (Exception, asyncio.CancelledError):  # finished already (closed, or cancelled by the test)
            pass
    await stop_hub()
    await db(connections.close_all)()
