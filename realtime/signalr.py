"""The SignalR-compatible hub's HTTP side and wire helpers (docs/SIGNALR.md, ../shared/SIGNALR.md).

- ``negotiate``: ``POST /hubs/campaign/negotiate`` (negotiateVersion 0 and 1).
- ``http_transport``: the long-polling and server-sent-events requests, answered "not supported".
- ``handshake_error``: which hub-protocol handshakes are accepted (``json`` versions 0 and 1).
- Connection tokens: signed and expiring (``TimestampSigner``), so negotiate and the WebSocket may
  reach different server processes without sticky sessions; they carry only a random id.
- Records: JSON objects each followed by ``\\x1e``; payload keys in camelCase.
- Rendering of native event frames as client-method invocations, per method family.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

RS = "\x1e"
CONNECTION_TOKEN_MAX_AGE = 60
_SIGNER_SALT = "realtime.signalr.connection"

# Message types of the hub protocol.
INVOCATION, STREAM_ITEM, COMPLETION, STREAM_INVOCATION, CANCEL_INVOCATION, PING, CLOSE = 1, 2, 3, 4, 5, 6, 7

# Method families (the value passed to RealtimeSession.subscribe as ``family``).
TASK012 = "signalr-task012"
REALTIME_API = "signalr-realtime-api"


# --- shutdown -----------------------------------------------------------------------------------------------

_shutdown = {"started": False}


def begin_shutdown() -> None:
    """daphne is stopping: new negotiations and connections are turned away, so clients reconnecting
    at once (withAutomaticReconnect's first delay is 0) retry until a live server answers."""
    _shutdown["started"] = True


def shutting_down() -> bool:
    return _shutdown["started"]


# --- connection tokens --------------------------------------------------------------------------------------


def _signer() -> signing.TimestampSigner:
    # "." keeps the token URL-safe: the client pastes it into the URL without encoding.
    return signing.TimestampSigner(salt=_SIGNER_SALT, sep=".")


def new_connection_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


def connection_token(connection_id: str) -> str:
    return _signer().sign(connection_id)


def check_connection_token(token: str, max_age: float | None = None) -> str | None:
    """The connection id inside a valid, unexpired token; None otherwise."""
    try:
        return _signer().unsign(token, max_age=CONNECTION_TOKEN_MAX_AGE if max_age is None else max_age)
    except signing.BadSignature:  # SignatureExpired is a BadSignature
        return None


# --- negotiate ----------------------------------------------------------------------------------------------


def _request_user(request: HttpRequest) -> Any:
    """Bearer token first (what ``accessTokenFactory`` sends), then the session."""
    try:
        result = JWTAuthentication().authenticate(request)
    except (AuthenticationFailed, InvalidToken, TokenError):
        return AnonymousUser()
    if result is not None:
        return result[0]
    return getattr(request, "user", AnonymousUser())


# The negotiate protocol version this server implements (ASP.NET Core's HttpConnectionDispatcher: 1).
NEGOTIATE_VERSION = 1


def _query_value(request: HttpRequest, name: str) -> str | None:
    """A query parameter looked up case-insensitively, as ASP.NET Core does (``NegotiateVersion``)."""
    for key in request.GET:
        if key.lower() == name.lower():
            return request.GET[key]
    return None


@csrf_exempt
def negotiate(request: HttpRequest) -> JsonResponse:
    """As ASP.NET Core's ``ProcessNegotiate``: ``negotiateVersion`` is always written, the client's
    version capped at 1, 0 when the request named none; ``connectionToken`` only for version 1 (with
    version 0 the client puts the ``connectionId`` in the URL, so that is the token)."""
    if request.method != "POST":
        response = JsonResponse({"error": "Use POST to negotiate."}, status=405)
        response["Allow"] = "POST"
        return response
    if shutting_down():
        return JsonResponse({"error": "The server is shutting down; try again."}, status=503)
    user = _request_user(request)
    if not user or not user.is_authenticated:
        return JsonResponse({"error": "Authentication required: send a valid access token or log in."}, status=401)
    version_text = _query_value(request, "negotiateVersion")
    version = 0
    if version_text is not None:
        try:
            version = int(version_text)
        except ValueError:
            return JsonResponse({"error": "The client requested a non-integer protocol version."}, status=400)
        if version < 0:
            return JsonResponse(
                {"error": f"The client requested version '{version}', but the server does not support this version."},
                status=400,
            )
        version = min(version, NEGOTIATE_VERSION)
    connection_id = new_connection_id()
    token = connection_token(connection_id)
    transports = [{"transport": "WebSockets", "transferFormats": ["Text"]}]
    if version == 0:
        return JsonResponse({"negotiateVersion": 0, "connectionId": token, "availableTransports": transports})
    return JsonResponse(
        {
            "negotiateVersion": version,
            "connectionId": connection_id,
            "connectionToken": token,
            "availableTransports": transports,
        }
    )


@csrf_exempt
def http_transport(request: HttpRequest) -> JsonResponse:
    """``/hubs/campaign`` reached over plain HTTP: a long-polling poll (GET), send (POST) or close
    (DELETE), or a server-sent-events stream (GET with ``Accept: text/event-stream``). Neither
    transport is served (negotiate offers WebSockets only): ASP.NET Core answers a disabled transport
    404 "<transport> transport not supported by this end point type"; so does this, in JSON."""
    accept = request.headers.get("Accept", "")
    transport = "ServerSentEvents" if "text/event-stream" in accept.lower() else "LongPolling"
    detail = (
        f"The {transport} transport is not supported by this hub; it speaks WebSockets only "
        "(open a WebSocket to this URL, as negotiate's availableTransports says)."
    )
    return JsonResponse({"detail": detail, "transport": transport, "supportedTransports": ["WebSockets"]}, status=404)


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


# --- events as client-method calls ------------------------------------------------------------------------


def orchestration_event(frame: dict[str, Any]) -> dict[str, Any]:
    """The native event frame (PROTOCOL.md §5) in camelCase, without the socket's ``type`` key."""
    return camel({key: value for key, value in frame.items() if key != "type"})


def render_task012(frame: dict[str, Any]) -> str:
    """Every event as ReceiveOrchestrationEvent; artifacts also as ReceiveArtifactUpdate."""
    text = invocation("ReceiveOrchestrationEvent", orchestration_event(frame))
    if frame.get("event") == "artifact.generated":
        update = {
            "campaignId": frame.get("campaign_id"),
            "runId": frame.get("run_id"),
            "sequence": frame.get("sequence"),
            "artifact": camel(frame.get("data", {}).get("artifact")),
        }
        text += invocation("ReceiveArtifactUpdate", update)
    return text


def render_realtime_api(frame: dict[str, Any]) -> str:
    """The realtime-api seed's client methods; events it has no method for are not sent."""
    event, campaign_id, data = frame.get("event"), frame.get("campaign_id"), frame.get("data") or {}
    if event == "campaign.started":
        return invocation("OnCampaignStarted", campaign_id)
    if event == "artifact.generated":
        return invocation("OnArtifactGenerated", camel(data.get("artifact")))
    if event == "artifact.chunk":
        return invocation("OnChunkReceived", {"campaignId": campaign_id, **camel(data)})
    if event == "compliance.completed":
        return invocation("OnComplianceCheckCompleted", {"campaignId": campaign_id, **camel(data)})
    if event == "campaign.completed":
        return invocation("OnCampaignCompleted", campaign_id)
    if event == "generation.failed":
        return invocation("OnGenerationFailed", {"campaignId": campaign_id, **camel(data)})
    return ""


def render_frame(family: str, frame: dict[str, Any]) -> str:
    return render_task012(frame) if family == TASK012 else render_realtime_api(frame)
