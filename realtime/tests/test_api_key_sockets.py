"""API keys on the sockets (PROTOCOL.md §13): the native WebSocket and the SignalR hub take a key
wherever they take a JWT; revoking it closes the sockets opened with it (4401) within 5 s."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from accounts.services import api_key_create, api_key_revoke
from realtime.signalr import http as signalr
from realtime.signalr.http import connection_token
from realtime.tests.hubs import HANDSHAKE, NEGOTIATE
from realtime.tests.hubs import PATH as HUB_PATH
from realtime.tests.sockets import db, expect_error, recv

# --- sockets ------------------------------------------------------------------------------------------------


async def wait_closed(comm: WebsocketCommunicator, timeout: float) -> tuple[list[dict], dict, float]:
    """Frames until the close; returns them, the close, and how long it took."""
    started, frames = time.monotonic(), []
    while True:
        output = await comm.receive_output(timeout)
        if output["type"] == "websocket.close":
            return frames, output, time.monotonic() - started
        frames.append(output)


@pytest.mark.django_db(transaction=True)
async def test_a_key_opens_a_native_socket_and_revoking_it_closes_the_socket_within_5_s(ws, users):
    alice = users["alice"]
    key, secret = await db(api_key_create)(user_id=alice.pk, name="dashboard")
    comm = await ws(token=secret)
    await comm.send_json_to({"type": "subscribe", "stream": "account"})
    assert (await recv(comm))["type"] == "subscribed"
    other = await ws(alice)  # a JWT socket of the same user stays
    await db(api_key_revoke)(key)
    frames, close, waited = await wait_closed(comm, timeout=5)
    assert close["code"] == 4401 and waited < 5
    assert '"This API key was revoked."' in frames[-1]["text"]
    await other.send_json_to({"type": "ping"})
    assert await recv(other) == {"type": "pong"}


@pytest.mark.django_db(transaction=True)
async def test_a_revoked_or_wrong_key_is_refused_at_the_handshake(ws, users):
    key, secret = await db(api_key_create)(user_id=users["alice"].pk, name="old")
    await db(api_key_revoke)(key)
    for credential in (secret, "abcdefgh.notakey", "abcdefg\x00.x", "abcdefgh.\x00"):
        comm = await ws(token=quote(credential))
        await expect_error(comm, "unauthenticated")


@pytest.mark.django_db(transaction=True)
def test_negotiate_takes_a_key(users):
    _, secret = api_key_create(user_id=users["alice"].pk, name="hub")
    assert Client().post(f"{NEGOTIATE}?negotiateVersion=1", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200
    assert Client().post(f"{NEGOTIATE}?negotiateVersion=1", HTTP_AUTHORIZATION="Bearer abcdefgh.x").status_code == 401


@pytest.mark.django_db(transaction=True)
async def test_a_key_opens_the_signalr_hub_and_revoking_it_closes_the_hub(hub, users):
    key, secret = await db(api_key_create)(user_id=users["alice"].pk, name="hub")
    path = f"{HUB_PATH}?id={connection_token(signalr.new_connection_id())}&access_token={quote(secret)}"
    connection = await hub(path=path, handshake=False)
    await connection.send(HANDSHAKE)
    assert await connection.next() == {}
    assert (await connection.call("SubscribeToAccount")).get("error") is None
    await db(api_key_revoke)(key)
    started = time.monotonic()
    message = await connection.next(timeout=5)
    while message.get("type") == 6:  # pings
        message = await connection.next(timeout=5)
    assert message == {"type": 7, "error": "This API key was revoked."}
    assert (await connection.next(timeout=5))["code"] == 4401 and time.monotonic() - started < 5
