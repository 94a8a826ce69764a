"""The SignalR-compatible hub's HTTP side (docs/SIGNALR.md, ../shared/SIGNALR.md).

- ``negotiate``: ``POST /hubs/campaign/negotiate`` (negotiateVersion 0 and 1); a user at the connection
  cap (realtime.limits) is told so here already, and the client's start() fails with that message.
- ``http_transport``: the long-polling and server-sent-events requests, answered "not supported".
- Connection tokens: signed and expiring (``TimestampSigner``), so negotiate and the WebSocket may
  reach different server processes without sticky sessions; they carry only a random id (and, for a
  stateful-reconnect connection, a mark: such a token lives as long as its session in Redis).
- The shutdown flag: once daphne is stopping, negotiations and new connections are turned away.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from accounts.authentication import ApiKeyAuthentication
from realtime import limits
from realtime.metrics import ERRORS
from realtime.signalr import stateful

CONNECTION_TOKEN_MAX_AGE = 60
_SIGNER_SALT = "realtime.signalr.connection"


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


# Ends the signed value of a stateful-reconnect connection's token (ids are base64url: never "~").
STATEFUL_MARK = "~"


def connection_token(connection_id: str, *, stateful: bool = False) -> str:
    return _signer().sign(connection_id + (STATEFUL_MARK if stateful else ""))


def check_connection_token(token: str, max_age: float | None = None) -> str | None:
    """The connection id inside a valid, unexpired token; None otherwise."""
    try:
        return _signer().unsign(token, max_age=CONNECTION_TOKEN_MAX_AGE if max_age is None else max_age)
    except signing.BadSignature:  # SignatureExpired is a BadSignature
        return None


def read_connection_token(token: str) -> tuple[str, bool] | None:
    """(connection id, stateful) of a valid token, or None. A plain token expires after
    CONNECTION_TOKEN_MAX_AGE; a stateful one is good as long as its session exists in Redis (the
    consumer asks), since the client reconnects with it after any time the reconnect window allows."""
    try:
        value = _signer().unsign(token)
    except signing.BadSignature:
        return None
    if value.endswith(STATEFUL_MARK):
        return value[: -len(STATEFUL_MARK)], True
    connection_id = check_connection_token(token)
    return None if connection_id is None else (connection_id, False)


# --- negotiate ----------------------------------------------------------------------------------------------


def _request_user(request: HttpRequest) -> Any:
    """Bearer token first (what ``accessTokenFactory`` sends: a JWT or an API key), then the session."""
    try:
        result = ApiKeyAuthentication().authenticate(request) or JWTAuthentication().authenticate(request)
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
    cap = limits.at_cap(user)
    if cap:
        # As ASP.NET Core answers a negotiate error: 200 with "error", which the clients raise as it is
        # (@microsoft/signalr's HttpConnection: ``throw new Error(negotiateResponse.error)``).
        ERRORS.labels("too_many_connections").inc()
        return JsonResponse({"error": limits.refusal_message(cap)})
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
    # Stateful reconnect, as ASP.NET Core offers it: asked for in the query, negotiate version 1, and
    # its session stored (in Redis: not offered while Redis cannot be reached).
    use_stateful = (
        version >= 1
        and (_query_value(request, "useStatefulReconnect") or "").lower() == "true"
        and stateful.enabled()
        and stateful.create(connection_id, user.pk)
    )
    token = connection_token(connection_id, stateful=use_stateful)
    transports = [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]  # JSON, MessagePack
    if version == 0:
        return JsonResponse({"negotiateVersion": 0, "connectionId": token, "availableTransports": transports})
    answer = {
        "negotiateVersion": version,
        "connectionId": connection_id,
        "connectionToken": token,
        "availableTransports": transports,
    }
    if use_stateful:
        answer["useStatefulReconnect"] = True
    return JsonResponse(answer)


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
