"""The SignalR JSON hub protocol, as data: message types, records, the handshake, parsing.

Pure functions, no Django and no I/O (../shared/SIGNALR.md): the consumer
(realtime.consumers.signalr) reads and writes through them, and they are tested on their own
(realtime/tests/test_signalr_protocol.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

RS = "\x1e"

# Message types of the hub protocol.
INVOCATION, STREAM_ITEM, COMPLETION, STREAM_INVOCATION, CANCEL_INVOCATION, PING, CLOSE = 1, 2, 3, 4, 5, 6, 7


class InvalidRecord(Exception):
    """A record that breaks the hub protocol: the connection is closed (with a Close message saying why)."""


# --- handshake ----------------------------------------------------------------------------------------------

# The JSON hub protocol's version, and the versions accepted in the handshake (ASP.NET Core's
# JsonHubProtocol.IsVersionSupported: any version up to its own).
JSON_PROTOCOL_VERSION = 1
JSON_PROTOCOL_VERSIONS = (0, 1)
_EXPECTED = '{"protocol":"json","version":1}'


def handshake_error(request: Any, *, binary: bool = False) -> str | None:
    """Why a parsed handshake request is refused, or None when it is accepted."""
    if not isinstance(request, dict) or "protocol" not in request:
        return f"Invalid handshake: expected {_EXPECTED}."
    protocol = request["protocol"]
    if not isinstance(protocol, str):
        return f'Invalid handshake: "protocol" must be a string, as in {_EXPECTED}.'
    if protocol.lower() == "messagepack":
        return 'The MessagePack protocol is not supported yet; use the JSON protocol ("json", version 1).'
    if protocol.lower() != "json":
        return f"The protocol {protocol[:40]!r} is not supported; this server speaks 'json' (versions 0 and 1)."
    if binary:
        return f"Send the handshake as a text frame: {_EXPECTED}."
    version = request.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        return f'Invalid handshake: "version" must be an integer, as in {_EXPECTED}.'
    if version not in JSON_PROTOCOL_VERSIONS:
        return (
            f"The server does not support version {str(version)[:20]} of the 'json' protocol; "
            "it supports versions 0 and 1."
        )
    return None


# --- records ------------------------------------------------------------------------------------------------


def record(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":")) + RS


def invocation(target: str, *arguments: Any) -> str:
    """A server-to-client call: no invocationId key at all (a null one breaks the client)."""
    return record({"type": INVOCATION, "target": target, "arguments": list(arguments)})


_CAMEL = re.compile(r"_([a-z0-9])")


def camel_key(key: str) -> str:
    return _CAMEL.sub(lambda match: match.group(1).upper(), key) if "_" in key else key


def camel(value: Any) -> Any:
    """Keys of dicts in camelCase, recursively (through lists too); values are never touched."""
    if isinstance(value, dict):
        return {camel_key(key) if isinstance(key, str) else key: camel(item) for key, item in value.items()}
    if isinstance(value, list):
        return [camel(item) for item in value]
    return value


def parse(text: str) -> dict[str, Any]:
    """One record's text (without its separator) as a message, or InvalidRecord saying what is wrong."""
    try:
        message = json.loads(text)
    except RecursionError:
        raise InvalidRecord("records must not nest that deeply.") from None
    except ValueError:
        raise InvalidRecord("not valid JSON.") from None
    if not isinstance(message, dict):
        raise InvalidRecord("a record must be a JSON object.")
    kind = message.get("type")
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise InvalidRecord('a record needs an integer "type".')
    invocation_id = message.get("invocationId")
    if invocation_id is not None and not isinstance(invocation_id, str):
        raise InvalidRecord('"invocationId" must be a string.')
    if kind in (INVOCATION, STREAM_INVOCATION):
        if not isinstance(message.get("target"), str):
            raise InvalidRecord('an invocation needs a "target" string.')
        if not isinstance(message.get("arguments"), list):
            raise InvalidRecord('an invocation needs an "arguments" array.')
        if kind == STREAM_INVOCATION and invocation_id is None:
            raise InvalidRecord('a stream invocation needs an "invocationId".')
    return message
