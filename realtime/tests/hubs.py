"""What the SignalR hub tests share: the URLs, records, and a Hub client over the real ASGI app
(the ``hub`` fixture is in conftest.py)."""

from __future__ import annotations

import json
import os
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from realtime.signalr.protocol import RS

db = database_sync_to_async
PATH = "/hubs/campaign"
NEGOTIATE = "/hubs/campaign/negotiate"
HANDSHAKE = '{"protocol":"json","version":1}' + RS


def token_for(user) -> str:
    return str(AccessToken.for_user(user))


def rec(message: dict[str, Any]) -> str:
    return json.dumps(message) + RS


def invoke(target: str, *arguments: Any, invocation_id: str | None = None) -> str:
    message: dict[str, Any] = {"type": 1, "target": target, "arguments": list(arguments)}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    return rec(message)


class Hub:
    """A hub connection seen from the client: raw frames in, records out."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm
        self.pending: list[Any] = []

    async def send(self, text: str) -> None:
        await self.comm.send_input({"type": "websocket.receive", "text": text})

    async def next(self, timeout: float = 5) -> Any:
        """The next record (a dict), or the websocket.close output."""
        while not self.pending:
            output = await self.comm.receive_output(timeout)
            if output["type"] == "websocket.close":
                return output
            assert output["text"].endswith(RS), output
            self.pending = [json.loads(part) for part in output["text"].split(RS)[:-1]]
        return self.pending.pop(0)

    async def call(self, target: str, *arguments: Any, invocation_id: str = "1") -> dict[str, Any]:
        """Invoke and return the Completion (client-method calls arriving before it are kept in ``calls``)."""
        await self.send(invoke(target, *arguments, invocation_id=invocation_id))
        self.calls: list[dict[str, Any]] = []
        while True:
            message = await self.next()
            if message.get("type") == 3 and message.get("invocationId") == invocation_id:
                return message
            self.calls.append(message)

    async def until(self, target: str, timeout: float = 5) -> list[dict[str, Any]]:
        """Records up to and including the first call of ``target``."""
        seen = []
        while True:
            message = await self.next(timeout)
            assert message.get("type") != "websocket.close", (target, seen)
            if message.get("type") == 6:
                continue
            seen.append(message)
            if message.get("type") == 1 and message["target"] == target:
                return seen

    async def quiet(self, timeout: float = 0.4) -> bool:
        return not self.pending and await self.comm.receive_nothing(timeout=timeout, interval=0.02)


def assert_readable(error: str) -> None:
    assert isinstance(error, str) and error.strip()
    assert "Traceback" not in error and "File " not in error and "Exception" not in error


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455 §5.2)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
