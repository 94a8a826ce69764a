"""The SignalR hub protocols, as data: message types, JSON records and MessagePack messages, the
handshake, parsing.

Pure functions, no Django and no I/O (../shared/SIGNALR.md): the consumer
(realtime.consumers.signalr) reads and writes through them, and they are tested on their own
(realtime/tests/test_signalr_protocol.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgpack

RS = "\x1e"

# Message types of the hub protocol.
INVOCATION, STREAM_ITEM, COMPLETION, STREAM_INVOCATION, CANCEL_INVOCATION, PING, CLOSE = 1, 2, 3, 4, 5, 6, 7
ACK, SEQUENCE = 8, 9
# The messages stateful reconnect numbers, acknowledges and sends again (each side counts its own).
SEQUENCED = frozenset((INVOCATION, STREAM_ITEM, COMPLETION, STREAM_INVOCATION, CANCEL_INVOCATION))


class InvalidRecord(Exception):
    """A record that breaks the hub protocol: the connection is closed (with a Close message saying why)."""


# --- handshake ----------------------------------------------------------------------------------------------

# The JSON hub protocol's version, and the versions accepted in the handshake (ASP.NET Core's
# JsonHubProtocol.IsVersionSupported: any version up to its own). Version 2 adds Ack and Sequence:
# @microsoft/signalr 8+ asks for it when stateful reconnect was negotiated, 1 otherwise.
JSON_PROTOCOL_VERSION = 2
JSON_PROTOCOL_VERSIONS = (0, 1, 2)
# MessagePack: @microsoft/signalr-protocol-msgpack 8+ asks for 2 (which adds Ack and Sequence), older 1.
MESSAGEPACK_PROTOCOL_VERSIONS = (1, 2)
PROTOCOL_VERSIONS = {"json": JSON_PROTOCOL_VERSIONS, "messagepack": MESSAGEPACK_PROTOCOL_VERSIONS}
_EXPECTED = '{"protocol":"json","version":1}'
SUPPORTED = "'json' (versions 0, 1 and 2) and 'messagepack' (versions 1 and 2)"


def handshake_protocol(request: Any) -> tuple[str | None, str | None]:
    """The protocol a parsed handshake request asks for ("json" or "messagepack") and None, or None
    and why it is refused. The handshake itself is JSON for both, in a text or a binary frame."""
    if not isinstance(request, dict) or "protocol" not in request:
        return None, f"Invalid handshake: expected {_EXPECTED}."
    protocol = request["protocol"]
    if not isinstance(protocol, str):
        return None, f'Invalid handshake: "protocol" must be a string, as in {_EXPECTED}.'
    name = protocol.lower()
    if name not in PROTOCOL_VERSIONS:
        return None, f"The protocol {protocol[:40]!r} is not supported; this server speaks {SUPPORTED}."
    version = request.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        return None, f'Invalid handshake: "version" must be an integer, as in {_EXPECTED}.'
    if version not in PROTOCOL_VERSIONS[name]:
        *others, last = (str(v) for v in PROTOCOL_VERSIONS[name])
        versions = f"{', '.join(others)} and {last}"
        return None, (
            f"The server does not support version {str(version)[:20]} of the '{name}' protocol; "
            f"it supports versions {versions}."
        )
    return name, None


def handshake_error(request: Any) -> str | None:
    """Why a parsed handshake request is refused, or None when it is accepted."""
    return handshake_protocol(request)[1]


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
    elif kind in (ACK, SEQUENCE):
        _check_sequence_id(message.get("sequenceId"))
    return message


def _check_sequence_id(value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRecord('Ack and Sequence messages need a non-negative integer "sequenceId".')


# --- MessagePack ------------------------------------------------------------------------------------------
#
# Binary frames; each message is a VarInt length (7 bits a byte, low bits first, at most 5 bytes)
# and a MessagePack array, as the hub protocol's specification lays them out:
#   [1, headers, invocationId|nil, target, arguments(, streamIds)]   Invocation
#   [2, headers, invocationId, item]                                 StreamItem
#   [3, headers, invocationId, 1 error | 2 void | 3 result(, value)] Completion
#   [4, headers, invocationId, target, arguments(, streamIds)]       StreamInvocation
#   [5, headers, invocationId]                                       CancelInvocation
#   [6]                                                              Ping
#   [7, error|nil(, allowReconnect)]                                 Close
#   [8, sequenceId] / [9, sequenceId]                                Ack / Sequence
# Messages are handled as the same dicts as the JSON protocol's records.

MAX_LENGTH_PREFIX = 5
ERROR_RESULT, VOID_RESULT, NON_VOID_RESULT = 1, 2, 3


def varint(length: int) -> bytes:
    out = bytearray()
    while True:
        part = length & 0x7F
        length >>= 7
        out.append(part | (0x80 if length else 0))
        if not length:
            return bytes(out)


def pack(message: dict[str, Any]) -> bytes:
    """One message, as a length-prefixed MessagePack array."""
    kind = message["type"]
    headers = message.get("headers") or {}
    if kind in (INVOCATION, STREAM_INVOCATION):
        items = [kind, headers, message.get("invocationId"), message["target"], message.get("arguments", [])]
        items.append(message.get("streamIds") or [])
    elif kind == COMPLETION:
        items = [kind, headers, message["invocationId"]]
        if "error" in message:
            items += [ERROR_RESULT, message["error"]]
        elif "result" in message:
            items += [NON_VOID_RESULT, message["result"]]
        else:
            items.append(VOID_RESULT)
    elif kind == STREAM_ITEM:
        items = [kind, headers, message["invocationId"], message.get("item")]
    elif kind == CANCEL_INVOCATION:
        items = [kind, headers, message["invocationId"]]
    elif kind == PING:
        items = [kind]
    elif kind == CLOSE:
        items = [kind, message.get("error"), bool(message.get("allowReconnect", False))]
    elif kind in (ACK, SEQUENCE):
        items = [kind, message["sequenceId"]]
    else:
        raise ValueError(f"no MessagePack form for message type {kind}")
    try:
        body = _packer.pack(items)
    except (OverflowError, ValueError, TypeError):  # an integer beyond 64 bits: as JSON would show it, a string
        body = _packer.pack(_packable(items))
    return varint(len(body)) + body


# Lone surrogates are legal in JSON strings; MessagePack's UTF-8 needs them passed through.
_packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass", autoreset=True)
_INT_RANGE = (-(2**63), 2**64 - 1)


def _packable(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else str(value)
    if isinstance(value, dict):
        return {key: _packable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_packable(item) for item in value]
    return value


def json_records_to_messagepack(text: str) -> bytes:
    """What the JSON renderers wrote (records ending in RS), as MessagePack messages."""
    return b"".join(pack(json.loads(part)) for part in text.split(RS)[:-1])


def _split(data: bytes) -> list[bytes]:
    bodies, offset = [], 0
    while offset < len(data):
        length, shift, used = 0, 0, 0
        while True:
            if used == MAX_LENGTH_PREFIX or offset + used >= len(data):
                raise InvalidRecord("a message's length prefix is malformed.")
            byte = data[offset + used]
            length |= (byte & 0x7F) << shift
            used, shift = used + 1, shift + 7
            if not byte & 0x80:
                break
        start = offset + used
        if start + length > len(data):
            raise InvalidRecord("a message is shorter than its length prefix says.")
        bodies.append(data[start : start + length])
        offset = start + length
    return bodies


def _string_or_nil(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidRecord(f"{what} must be a string.")
    return value


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError("extension types are not part of the hub protocol")


def unpack(data: bytes) -> list[dict[str, Any]]:
    """The messages of a binary frame, as the JSON protocol's dicts, or InvalidRecord saying why."""
    messages = []
    for body in _split(data):
        try:
            # Map keys are strings (headers, payloads): anything else is refused, which also keeps
            # out keys whose hashes an attacker could make collide (extension types, timestamps).
            items = msgpack.unpackb(
                body, raw=False, strict_map_key=True, max_array_len=10_000, max_map_len=10_000, ext_hook=_no_ext
            )
        except Exception:  # malformed, too deep, an extension type, a key that is not a string: all refused
            raise InvalidRecord("not a valid MessagePack message.") from None
        if not isinstance(items, list) or not items or not isinstance(items[0], int) or isinstance(items[0], bool):
            raise InvalidRecord("a message must be an array starting with its integer type.")
        kind = items[0]
        message: dict[str, Any] = {"type": kind}
        if kind in (INVOCATION, STREAM_INVOCATION):
            if len(items) < 5:
                raise InvalidRecord("an invocation needs headers, an id, a target and arguments.")
            message["invocationId"] = _string_or_nil(items[2], "an invocation's id")
            if not isinstance(items[3], str):
                raise InvalidRecord("an invocation needs a target string.")
            if not isinstance(items[4], list):
                raise InvalidRecord("an invocation needs an arguments array.")
            message["target"], message["arguments"] = items[3], items[4]
            if len(items) > 5 and items[5]:
                message["streamIds"] = items[5]
            if kind == STREAM_INVOCATION and message["invocationId"] is None:
                raise InvalidRecord("a stream invocation needs an id.")
        elif kind in (STREAM_ITEM, COMPLETION, CANCEL_INVOCATION):
            if len(items) < 3:
                raise InvalidRecord("the message needs headers and an invocation id.")
            message["invocationId"] = _string_or_nil(items[2], "an invocation id")
        elif kind == CLOSE:
            message["error"] = _string_or_nil(items[1] if len(items) > 1 else None, "a Close message's error")
        elif kind in (ACK, SEQUENCE):
            _check_sequence_id(items[1] if len(items) > 1 else None)
            message["sequenceId"] = items[1]
        messages.append(message)
    return messages
