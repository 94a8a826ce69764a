"""Server-sent events (PROTOCOL.md §10): ``GET /api/campaigns/{id}/stream/`` and ``GET /api/account/stream/``.

A ``RealtimeSession`` like the sockets: the same authentication (bearer header, session cookie,
``access_token``, an API key), authorization, subscription, fan-out, gap filling, resume and
slow-client policy; it only speaks HTTP instead of WebSocket frames. One stream per response:

- refusals come before the stream starts, as JSON with the status (401, 403, 404, 400, 503; 429 for a
  user at the connection cap, realtime.limits);
- ``retry: 2000`` first; then, for a fresh client, ``event: snapshot``, and every durable event after
  it; with ``Last-Event-ID: K`` (EventSource's own reconnect) or ``?last_sequence=K``, every durable
  event after K (a ``snapshot`` with ``"resync": true`` if K is older than the log);
- a durable event carries ``id:`` (its sequence), a chunk none (EventSource keeps the last id);
- a comment line every WS_PING_INTERVAL_SECONDS keeps proxies from closing an idle stream;
- the server ends the response where a socket would be closed (an expired token or revoked key, with
  ``event: stream.error`` first; shutdown), and cuts off a reader that fell too far behind;
  EventSource reconnects by itself and resumes with Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings

from eventlog.reads import campaign_log
from marketing_agents.errors import DATABASE_DOWN, unavailable_detail
from realtime import limits
from realtime.connection import CLOSE_TRY_AGAIN_LATER
from realtime.consumers.base import MESSAGES, ClientError, RealtimeSession, check_last_sequence, clock
from realtime.delivery import Subscription
from realtime.fanout import get_fanout
from realtime.metrics import AUTH_FAILURES, CONNECTIONS, ERRORS

logger = logging.getLogger("realtime.connections")

RETRY_MS = 2000
RETRY_AFTER = 2  # seconds: the Retry-After of a refusal while the server recovers
STATUS = {"unauthenticated": 401, "token_expired": 401, "not_found": 404, "bad_request": 400}


def sse_event(event: str, data: str, sequence: int | None = None) -> str:
    head = f"id: {sequence}\n" if sequence is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def without_type(frame_text: str) -> tuple[dict[str, Any], str]:
    """The socket's frame as SSE data: the same object without the socket's ``type`` key."""
    frame = json.loads(frame_text)
    frame.pop("type", None)
    return frame, json.dumps(frame, separators=(",", ":"))


class EventStreamConsumer(RealtimeSession):
    protocol_name = "sse"
    stream: str | None = None  # "account" for /api/account/stream/; None: the URL names a campaign
    fanout = None  # until the request arrives (a disconnect may come first)
    _expiry = None
    _keepalive: asyncio.Task | None = None
    ended = False

    async def http_request(self, message: dict[str, Any]) -> None:
        if message.get("more_body"):
            return  # a GET's body, if any, is ignored; the stream starts once it is all in
        self.connection_id = uuid.uuid4().hex[:12]
        self.user = self.scope.get("user")
        self.fanout = get_fanout()
        self.connection_setup()
        self.window_start, self.window_frames, self.over_limit_windows = clock(), 0, 0
        self._expiry = None
        self._keepalive: asyncio.Task | None = None
        self.accepted = False
        self.ended = False
        try:
            if self.scope.get("method") != "GET":  # (a HEAD would have to answer without the stream)
                await self.refuse(405, "Event streams are read with GET.", "method_not_allowed")
                return
            await self.open_stream()
        except ClientError as error:
            if not self.accepted:
                await self.refuse(STATUS.get(error.code, 400), error.message, error.code)
            else:
                await self.send_error(error)
                await self.close()
        except Exception as exc:  # the database or Redis failed us: refused cleanly, or ended, to be retried
            detail = unavailable_detail(exc)
            if detail is None:
                logger.exception("sse %s: the stream failed", self.connection_id)
            if not self.accepted:
                await self.refuse(503, detail or MESSAGES["internal_error"], "unavailable", retry_after=RETRY_AFTER)
            else:
                await self.close()

    async def open_stream(self) -> None:
        error = self.scope.get("auth_error")
        if error == "unavailable":
            await self.refuse(503, DATABASE_DOWN, "unavailable", retry_after=RETRY_AFTER)
            return
        if error or self.user is None or not self.user.is_authenticated:
            AUTH_FAILURES.labels(error or "unauthenticated").inc()
            raise ClientError(error or "unauthenticated")
        if self.fanout.stopping:
            await self.refuse(503, "The server is restarting; try again.", "unavailable", retry_after=RETRY_AFTER)
            return
        last_sequence = self.requested_sequence()
        if self.stream is None:
            log = campaign_log(await self.visible_campaign(self.scope["url_route"]["kwargs"]["campaign_id"]))
        else:
            log = await self.visible_stream(self.stream)
        if not await self.take_slot():  # last of the checks: a refusal above never counted
            message = limits.refusal_message(limits.cap_for(self.user))
            await self.refuse(429, message, "too_many_connections", retry_after=limits.RETRY_AFTER_SECONDS)
            return
        await self.fanout.add_connection(self)
        await self.base_send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache, no-store"),
                    (b"x-accel-buffering", b"no"),
                    *self.cors_headers(),
                ],
            }
        )
        self.accepted = True
        CONNECTIONS.labels(self.protocol_name).inc()
        logger.info("sse %s connected: user=%s %s", self.connection_id, self.user.get_username(), log.name)
        await self.write(f"retry: {RETRY_MS}\n\n")
        if last_sequence is None:  # a fresh client: the snapshot, then everything after it
            snapshot = await self.log_snapshot(log)
            # Its id is its position: EventSource's reconnect then resumes from there (Last-Event-ID).
            position = snapshot["last_event_sequence"]
            await self.write(sse_event("snapshot", json.dumps(snapshot, separators=(",", ":")), position))
            await self.follow(log, snapshot["last_event_sequence"], "sse", counted=False)
        else:
            await self.follow(log, last_sequence, "sse")
        self._keepalive = asyncio.ensure_future(self.keep_alive())
        expires_at = self.scope.get("token_expires_at")
        if expires_at:
            delay = max(0.0, expires_at - time.time())
            self._expiry = asyncio.get_running_loop().call_later(delay, lambda: asyncio.ensure_future(self.expire()))

    def requested_sequence(self) -> int | None:
        """``Last-Event-ID`` (EventSource's reconnect) first, then ``?last_sequence``."""
        headers = {name.lower(): value for name, value in self.scope.get("headers", [])}
        raw = headers.get(b"last-event-id", b"").decode("latin-1").strip() or None
        if raw is None:
            query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
            raw = (query.get("last_sequence") or [None])[0]
        if raw is None:
            return None
        if not (raw.isascii() and raw.isdecimal()) or len(raw) > 19:
            raise ClientError("bad_request", "Last-Event-ID and last_sequence must be a non-negative integer.")
        value = int(raw)
        check_last_sequence(value)
        return value

    def cors_headers(self) -> list[tuple[bytes, bytes]]:
        """For a page of another origin in ALLOWED_ORIGINS (HandshakeMiddleware refused the others):
        EventSource ``withCredentials`` needs the origin echoed and credentials allowed."""
        origin = dict(self.scope.get("headers", [])).get(b"origin")
        if origin is None:
            return []
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]

    async def refuse(self, status: int, detail: str, code: str, *, retry_after: int = 0) -> None:
        """A JSON answer instead of a stream (the stream has not started)."""
        ERRORS.labels(code).inc()
        logger.info("sse %s refused: %s", self.connection_id, code)
        headers = [(b"content-type", b"application/json"), *self.cors_headers()]
        if status == 405:
            headers.append((b"allow", b"GET"))
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="api"'))
        if retry_after:
            headers.append((b"retry-after", str(retry_after).encode()))
        await self.base_send({"type": "http.response.start", "status": status, "headers": headers})
        await self.base_send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})
        self.ended = True

    async def keep_alive(self) -> None:
        while not self.ended:
            await asyncio.sleep(settings.WS_PING_INTERVAL_SECONDS)
            if not self.ended and not self.congested:
                await self.write(": keep-alive\n\n")

    # --- writing and ending ------------------------------------------------------------------------------

    async def write(self, text: str) -> None:
        if self.ended or not text:
            return
        await self.base_send({"type": "http.response.body", "body": text.encode(), "more_body": True})

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """End the response (where a socket would be closed with ``code``). A reader too slow to keep up
        (1013) is cut off instead: it is not reading the end of a response either, and an ended
        HTTP/1.1 response would leave its connection open, and the bytes waiting for it held."""
        if self.ended:
            return
        self.ended = True
        if code == CLOSE_TRY_AGAIN_LATER and self._transport is not None:
            self._transport.abortConnection()
        elif self.accepted:
            await self.base_send({"type": "http.response.body", "body": b"", "more_body": False})

    async def say_goodbye(self) -> None:
        self.closing = True
        await self.close()

    def client_gone(self) -> bool:
        return self.ended

    # --- rendering -----------------------------------------------------------------------------------------

    def render_event(self, subscription: Subscription, message: dict[str, Any]) -> str:
        rendered = message.get("_sse")  # one rendering for every SSE subscriber of the message
        if rendered is None:
            frame, data = without_type(message["frame"])
            rendered = message["_sse"] = sse_event(frame["event"], data, frame.get("sequence"))
        return rendered

    def render_replayed(self, subscription: Subscription, frame: dict[str, Any]) -> str:
        data = {key: value for key, value in frame.items() if key != "type"}
        return sse_event(frame["event"], json.dumps(data, separators=(",", ":")), frame.get("sequence"))

    def render_notice(self, message: dict[str, Any]) -> str:
        frame, data = without_type(message["frame"])
        return sse_event("system.notice", data)

    # --- what RealtimeSession asks for -----------------------------------------------------------------------

    async def send_error(self, error: ClientError, request_id: Any = None) -> None:
        ERRORS.labels(error.code).inc()
        data = json.dumps({"code": error.code, "message": error.message}, separators=(",", ":"))
        # Not "error": EventSource's own connection-error event has that name.
        await self.write(sse_event("stream.error", data))

    async def send_subscribed(self, subscription: Subscription, last_sequence: int) -> None:
        pass  # the 200 answer says it

    async def send_snapshot(self, subscription: Subscription, snapshot: dict[str, Any], *, resync: bool) -> None:
        data = json.dumps({**snapshot, "resync": resync}, separators=(",", ":"))
        await self.write(sse_event("snapshot", data, snapshot["last_event_sequence"]))

    async def refuse_unavailable(self) -> None:
        await self.refuse(503, DATABASE_DOWN, "unavailable", retry_after=RETRY_AFTER)

    async def delivery_failed(self) -> None:
        await self.send_error(ClientError("internal_error", MESSAGES["internal_error"]))
        await self.close()

    async def http_disconnect(self, message: dict[str, Any]) -> None:
        self.ended = True
        if self._keepalive is not None:
            self._keepalive.cancel()
        await self.websocket_disconnect({"code": None})


class AccountStreamConsumer(EventStreamConsumer):
    stream = "account"
