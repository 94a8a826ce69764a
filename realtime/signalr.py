"""The SignalR-compatible hub's HTTP side and wire helpers (docs/SIGNALR.md, ../shared/SIGNALR.md).

- ``negotiate``: ``POST /hubs/campaign/negotiate`` (negotiateVersion 0 and 1).
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


@csrf_exempt
def negotiate(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        response = JsonResponse({"error": "Use POST to negotiate."}, status=405)
        response["Allow"] = "POST"
        return response
    if shutting_down():
        return JsonResponse({"error": "The server is shutting down; try again."}, status=503)
    user = _request_user(request)
    if not user or not user.is_authenticated:
        return JsonResponse({"error": "Authentication required: send a valid access token or log in."}, status=401)
    version_text = request.GET.get("negotiateVersion", "0")
    try:
        version = min(int(version_text), 1)
    except ValueError:
        return JsonResponse({"error": "negotiateVersion must be an integer."}, status=400)
    connection_id = new_connection_id()
    token = connection_token(connection_id)
    transports = [{"transport": "WebSockets", "transferFormats": ["Text"]}]
    if version < 1:
        # Version 0 has no connectionToken: the client uses the connectionId as the token.
        return JsonResponse({"connectionId": token, "availableTransports": transports})
    return JsonResponse(
        {
            "negotiateVersion": 1,
            "connectionId": connection_id,
            "connectionToken": token,
            "availableTransports": transports,
        }
    )


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
