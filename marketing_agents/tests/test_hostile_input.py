"""Hostile and malformed input against a real daphne (marketing_agents.serve): every answer is a
clear error in the protocol's own shape, nothing is stored, the server logs no traceback.

These are the cases a real server adds to what the in-process tests see: Twisted parsing bodies,
autobahn enforcing frame limits and UTF-8, Django refusing a Host, before any view or consumer runs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

import httpx
import pytest
import websockets
from channels.db import database_sync_to_async
from rest_framework_simplejwt.tokens import AccessToken

from campaigns.api.parsers import TOO_DEEP
from campaigns.models import Campaign
from campaigns.tests.factories import UserFactory
from realtime.tests.hubs import ws_frame

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

db = database_sync_to_async
RS = "\x1e"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
async def served(start_web):
    server = start_web()
    alice = await db(UserFactory)(username="alice")
    return server, alice, {"Authorization": f"Bearer {AccessToken.for_user(alice)}"}


async def test_bad_bodies_and_hosts_get_json_errors_and_store_nothing(served):
    server, alice, bearer = served
    json_body = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as api:
        answers = {
            "deep token body": await api.post("/api/auth/token/", content=nested(1000), headers=json_body),
            "deep campaign body": await api.post("/api/campaigns/", content=nested(1000), headers=json_body | bearer),
            "33 levels": await api.post(
                "/api/campaigns/",
                json={"name": "x", "brief": "y", "settings": json.loads(nested(32))},
                headers=bearer,
            ),
            # Twisted used to answer this one itself: a bare 400, no body
            "multipart, no boundary": await api.post(
                "/api/auth/token/", content=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data"}
            ),
            "multipart, broken": await api.post(
                "/api/campaigns/",
                content=b"--x\r\nContent-Disposition: form-data\r\n\r\nno end",
                headers={"Content-Type": "multipart/form-data; boundary=x"} | bearer,
            ),
            "unknown host": await api.get("/api/campaigns/", headers={"Host": "evil.example"} | bearer),
        }
    expected = {
        "deep token body": (400, {"detail": TOO_DEEP}),
        "deep campaign body": (400, {"detail": TOO_DEEP}),
        "33 levels": (400, {"detail": TOO_DEEP}),
        "multipart, no boundary": (415, {"detail": 'Unsupported media type "multipart/form-data" in request.'}),
        "multipart, broken": (
            415,
            {"detail": 'Unsupported media type "multipart/form-data; boundary=x" in request.'},
        ),
        "unknown host": (400, {"detail": "The request was malformed."}),
    }
    for case, response in answers.items():
        assert response.headers.get("content-type") == "application/json", (case, response.headers, response.text)
        assert (response.status_code, response.json()) == expected[case], case
    assert await db(Campaign.objects.count)() == 0
    log = server.log()
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]
    assert "Invalid HTTP_HOST header: 'evil.example'" in log, "the refused host is still logged, in one line"


async def receive_until_closed(ws) -> tuple[list, int | None]:
    frames = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            frames.append(await asyncio.wait_for(ws.recv(), 10))
    return frames, closed.value.rcvd.code if closed.value.rcvd else None


async def test_oversized_frames_are_refused_with_the_protocols_error_and_1009(served):
    """Above WS_MAX_FRAME_BYTES a consumer answers; above daphne's hard limit (1 MiB) the frame never
    reaches one: both must read the same to the client, not a dropped connection (1006)."""
    server, alice, bearer = served
    token = AccessToken.for_user(alice)
    for size in (200 * 1024, 2 * 1024 * 1024):
        async with websockets.connect(f"{server.ws_url}/ws/campaigns/?access_token={token}", max_size=None) as ws:
            await ws.send("x" * size)
            frames, code = await receive_until_closed(ws)
        assert code == 1009, size
        assert [json.loads(frame) for frame in frames] == [
            {"type": "error", "code": "message_too_large", "message": "Frames are limited to 100 KB."}
        ], size

        async with websockets.connect(f"{server.ws_url}/hubs/campaign?access_token={token}", max_size=None) as hub:
            await hub.send('{"protocol":"json","version":1}' + RS)
            assert await asyncio.wait_for(hub.recv(), 10) == "{}" + RS
            await hub.send("x" * size + RS)
            frames, code = await receive_until_closed(hub)
        assert code == 1009, size
        assert frames == ['{"type":7,"error":"Frames are limited to 100 KB."}' + RS], size
    assert "Traceback" not in server.log(), server.log()[-3000:]


async def test_text_that_is_not_utf8_is_closed_with_1007(served):
    server, alice, bearer = served
    token = AccessToken.for_user(alice)
    for path in ("/ws/campaigns/", "/hubs/campaign"):
        async with websockets.connect(f"{server.ws_url}{path}?access_token={token}") as ws:
            await ws.send(b'{"type": "subscribe", "campaign_id": "\xff\xfe"}', text=True)
            frames, code = await receive_until_closed(ws)
        assert (frames, code) == ([], 1007), path
    assert "Traceback" not in server.log(), server.log()[-3000:]


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",  # a foreign origin
        "http://",  # no host: autobahn refused it itself, with 400
        "evil",
    ],
)
async def test_every_refused_origin_is_403(served, origin):
    server, alice, bearer = served
    for path in ("/ws/campaigns/", "/hubs/campaign"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(
                f"{server.ws_url}{path}?access_token={AccessToken.for_user(alice)}",
                origin=None,
                additional_headers={"Origin": origin},
            ):
                pass
        assert refused.value.response.status_code == 403, (path, origin)


async def test_an_answer_for_a_native_client_that_closed_is_dropped_without_a_traceback(served):
    """A ping and the close frame in one TCP write: autobahn reads both before the consumer answers,
    so the pong met a protocol that was closing but not yet disconnected, and daphne logged
    "Attempt to send on a closed protocol" with a traceback."""
    server, alice, bearer = served
    rounds = 10

    def one_round() -> None:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                f"GET /ws/campaigns/?access_token={AccessToken.for_user(alice)} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            response = b""
            while b"\r\n\r\n" not in response:
                response += sock.recv(4096)
            assert response.startswith(b"HTTP/1.1 101"), response
            ping = ws_frame(0x1, b'{"type": "ping", "request_id": "r"}')
            sock.sendall(ping + ws_frame(0x8, (1000).to_bytes(2, "big")))
            while sock.recv(4096):  # until the server drops the TCP connection
                pass
        finally:
            sock.close()

    for _ in range(rounds):
        await asyncio.to_thread(one_round)
    deadline = asyncio.get_running_loop().time() + 20
    while server.log().count("client gone, output dropped") < rounds and "Traceback" not in server.log():
        assert asyncio.get_running_loop().time() < deadline, server.log()[-3000:]
        await asyncio.sleep(0.05)  # polling the log for the condition above, bounded by the deadline
    log = server.log()
    assert "Traceback" not in log and "closed protocol" not in log, log[-3000:]
