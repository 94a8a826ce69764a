"""WebSocket handshake checks: the Origin, then who the user is.

Authentication, in this order (PROTOCOL.md §5): ``access_token`` query parameter, ``Authorization:
Bearer`` (or ``Api-Key``) header, Django session cookie. The credential is a JWT or an API key
(§13). The outcome lands in the scope: ``user`` (AnonymousUser when none worked), ``auth_error``
(``unauthenticated`` or ``token_expired``), ``token_expires_at`` (a POSIX time, for tokens) so the
consumer can close the connection when the token runs out, and ``api_key_id`` so the fan-out closes
it once its key is revoked.
"""

from __future__ import annotations

import copy
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError
from django.http.cookie import parse_cookie
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from accounts.selectors import api_key_user, looks_like_api_key
from marketing_agents.batching import BatchedRead
from marketing_agents.errors import unavailable_detail
from realtime.metrics import AUTH_FAILURES

logger = logging.getLogger(__name__)


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope.get("headers", [])}


def origin_allowed(scope: dict[str, Any]) -> bool:
    """No Origin (a non-browser client), the server's own origin, or one of ALLOWED_ORIGINS."""
    headers = _headers(scope)
    origin = headers.get(b"origin")
    if origin is None:
        return True
    origin_text = origin.decode("latin-1").rstrip("/")
    if origin_text in settings.ALLOWED_ORIGINS:
        return True
    host = headers.get(b"host", b"").decode("latin-1")
    parts = urlsplit(origin_text)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc == host


def _token_from(scope: dict[str, Any]) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("access_token"):
        return query["access_token"][0]
    authorization = _headers(scope).get(b"authorization", b"").decode("latin-1")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() in ("bearer", "api-key"):
        return credential.strip()
    return None


def _read_users(pks: list[Any]) -> dict[Any, Any]:
    return {user.pk: user for user in get_user_model().objects.filter(pk__in=pks)}


_users = BatchedRead(_read_users)  # a reconnect storm asks for thousands at once


async def _user_from_token(token: str) -> tuple[Any, str | None, float | None]:
    """The token is checked here (no database); its user is read with the other sockets' (batched)."""
    try:
        access = AccessToken(token)
    except TokenError as exc:
        code = "token_expired" if "expired" in str(exc).lower() else "unauthenticated"
        return AnonymousUser(), code, None
    try:
        pk = get_user_model()._meta.pk.to_python(access.get(settings.SIMPLE_JWT.get("USER_ID_CLAIM", "user_id")))
    except ValidationError:
        return AnonymousUser(), "unauthenticated", None
    user = await _users.get(pk)
    if user is None or not user.is_active:
        return AnonymousUser(), "unauthenticated", None
    return copy.copy(user), None, float(access["exp"])  # a copy per socket: nothing of one leaks to another


@database_sync_to_async
def _user_from_api_key(credential: str) -> tuple[Any, str | None, str | None]:
    found = api_key_user(credential)
    if found is None:
        return AnonymousUser(), "unauthenticated", None
    user, key = found
    return user, None, key.pk


@database_sync_to_async
def _user_from_session(scope: dict[str, Any]) -> Any:
    from importlib import import_module

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
    from django.utils.crypto import constant_time_compare

    key = parse_cookie(_headers(scope).get(b"cookie", b"").decode("latin-1")).get(settings.SESSION_COOKIE_NAME)
    if not key:
        return AnonymousUser()
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key=key.strip())
    try:
        user_id, backend_path = session[SESSION_KEY], session[BACKEND_SESSION_KEY]
    except KeyError:
        return AnonymousUser()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    user = load_backend(backend_path).get_user(user_id)
    # The same check as django.contrib.auth.get_user: a changed password ends old sessions.
    if user is None or not constant_time_compare(session.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()):
        return AnonymousUser()
    return user


class HandshakeMiddleware:
    """Refuses foreign origins (HTTP 403) and authenticates; it never wraps ``send``, so the consumer
    writes straight to the server's protocol (see ``realtime.connection``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] not in ("websocket", "http"):  # http: the event streams (realtime.routing)
            return await self.app(scope, receive, send)
        if not origin_allowed(scope):
            AUTH_FAILURES.labels("origin").inc()
            logger.warning("%s refused: origin %r not allowed", scope["type"], _headers(scope).get(b"origin"))
            if scope["type"] == "http":
                await send(
                    {"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"application/json")]}
                )
                return await send({"type": "http.response.body", "body": b'{"detail": "This origin is not allowed."}'})
            await receive()  # websocket.connect
            return await send({"type": "websocket.close", "code": 403})
        scope = dict(scope)
        token = _token_from(scope)
        scope["api_key_id"] = None
        try:
            if token is not None and looks_like_api_key(token):
                scope["user"], scope["auth_error"], scope["api_key_id"] = await _user_from_api_key(token)
                scope["token_expires_at"] = None  # a key never expires on its own; revoking it closes the socket
            elif token is not None:
                scope["user"], scope["auth_error"], scope["token_expires_at"] = await _user_from_token(token)
            else:
                scope["user"], scope["token_expires_at"] = await _user_from_session(scope), None
                scope["auth_error"] = None if scope["user"].is_authenticated else "unauthenticated"
        except (OperationalError, InterfaceError) as exc:  # the database is down: refused cleanly, retried
            unavailable_detail(exc)  # one warning line, no traceback
            scope["user"], scope["auth_error"], scope["token_expires_at"] = AnonymousUser(), "unavailable", None
        return await self.app(scope, receive, send)
