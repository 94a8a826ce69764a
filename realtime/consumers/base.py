"""The session every realtime protocol shares: who the user is, limits, subscriptions, commands.

The native consumer (``/ws/campaigns/``) and the SignalR-compatible hub (``/hubs/campaign``) both
build on this, so authorization, limits, ordering and gap-free delivery are one piece of code.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from campaigns.errors import NotFound, ServiceError
from campaigns.models import Campaign
from campaigns.selectors import campaigns_get_visible_many
from eventlog.models import StreamKind
from eventlog.reads import CAMPAIGN, LogRef, campaign_log, log_position, stream_log
from eventlog.services import account_stream, ops_stream
from marketing_agents.batching import BatchedRead
from marketing_agents.errors import DATABASE_DOWN
from orchestration.selectors import run_get_visible
from realtime import limits
from realtime.connection import CLOSE_TRY_AGAIN_LATER, Connection
from realtime.delivery import Subscription
from realtime.fanout import get_fanout
from realtime.metrics import AUTH_FAILURES, CONNECTIONS, RECONNECTIONS, SNAPSHOT_LATENCY, SUBSCRIPTIONS
from realtime.snapshots import campaign_snapshot, stream_snapshot

logger = logging.getLogger("realtime.connections")


def _read_visible(keys: list[tuple[Any, bool, str]]) -> dict[tuple[Any, bool, str], Campaign | None]:
    """Keys are (user, is_staff, public id): users compare equal by id, and one whose rights changed
    between two of its sockets must be asked about separately."""
    return dict(zip(keys, campaigns_get_visible_many([(user, public_id) for user, _, public_id in keys]), strict=True))


# Which campaign a subscribe names, if its user may see it: batched across sockets (a reconnect storm).
_visible_campaigns = BatchedRead(_read_visible)


def _read_account_streams(user_ids: list[int]) -> dict[int, LogRef]:
    return {user_id: stream_log(account_stream(user_id)) for user_id in user_ids}


# Each user's account stream (made on first use), batched like the campaigns.
_account_streams = BatchedRead(_read_account_streams)
STREAMS = (StreamKind.ACCOUNT, StreamKind.OPS)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

MESSAGES = {
    "unauthenticated": "Authentication required: send an access token or log in.",
    "token_expired": "Your access token expired; reconnect with a new one.",
    "key_revoked": "This API key was revoked.",
    "not_found": "Campaign not found.",
    "stream_not_found": "Stream not found.",
    "rate_limited": "Too many frames; slow down.",
    "too_many_subscriptions": "Too many subscriptions on one connection.",
    "too_many_connections": "Too many open connections for this account; close one and try again.",
    "message_too_large": "Frame too large.",
    "internal_error": "Something went wrong on our side; try again.",
}


# The rate limit's clock; tests put a clock of their own here rather than sleep through windows.
clock = time.monotonic


def frame_limit_message() -> str:
    return f"Frames are limited to {settings.WS_MAX_FRAME_BYTES // 1024} KB."


def check_last_sequence(last_sequence: Any) -> None:
    if last_sequence is not None and (
        not isinstance(last_sequence, int) or isinstance(last_sequence, bool) or last_sequence < 0
    ):
        raise ClientError("bad_request", "last_sequence must be a non-negative integer.")


class ClientError(Exception):
    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message or MESSAGES.get(code, code))
        self.code = code
        self.message = message or MESSAGES.get(code, code)


class RealtimeSession(Connection, AsyncWebsocketConsumer):
    """Subclasses parse and render their protocol; this class owns the state and the rules."""

    protocol_name = "native"
    slot: str | None = None  # its member in the user's connection count (realtime.limits), once counted

    # --- lifecycle ------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """channels' AsyncConsumer.__call__ without the channel layer. Consumers never join the layer
        themselves (the process fan-out does, once per campaign), so this reads the client's messages
        directly, where channels wraps every wait in a task (await_many_dispatch): that cost each
        idle connection a task, a future and a set, and each frame a task."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # Cancelled by daphne (a handler still busy past its close timeout) or failed, a consumer
            # never runs its disconnect handler: its slot is given back here, and it leaves the fan-out's
            # connections (synchronous steps only: its subscriptions, which leaving needs awaits for,
            # stay until the process restarts; events offered to them go nowhere).
            self.release_slot()
            fanout = getattr(self, "fanout", None)
            if fanout is not None and self in fanout.connections:
                fanout.remove_connection(self)
                CONNECTIONS.labels(self.protocol_name).dec()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """channels' dispatch, minus its ``aclose_old_connections()``: that is a trip to the database
        thread before every client frame, and every database call here already goes through
        ``database_sync_to_async``, which closes stale connections around itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self.connection_id = uuid.uuid4().hex[:12]
        self.user = self.scope.get("user")
        self.fanout = get_fanout()
        self.connection_setup()
        self.window_start, self.window_frames, self.over_limit_windows = clock(), 0, 0
        self._expiry: asyncio.TimerHandle | None = None
        self.accepted = False
        await self.on_connect()

    async def start_session(self) -> bool:
        """Accept, then refuse politely if unauthenticated (the client can read why)."""
        error = self.scope.get("auth_error")
        if error == "unavailable":  # the database is down (PROTOCOL.md §9): the client retries
            logger.info("ws %s refused: the database is unavailable", self.connection_id)
            await self.accept()
            self.accepted = True
            await self.refuse_unavailable()
            return False
        if error or self.user is None or not self.user.is_authenticated:
            code = error or "unauthenticated"
            AUTH_FAILURES.labels(code).inc()
            logger.info("ws %s refused: %s", self.connection_id, code)
            await self.accept()
            self.accepted = True
            await self.send_error(ClientError(code))
            await self.close(CLOSE_UNAUTHENTICATED)
            return False
        if self.fanout.stopping:  # the process is shutting down: reconnect to another one
            await self.accept()
            self.accepted = True
            await self.say_goodbye()
            return False
        if not await self.take_slot():
            await self.accept()
            self.accepted = True
            await self.send_error(
                ClientError("too_many_connections", limits.refusal_message(limits.cap_for(self.user)))
            )
            await self.close(CLOSE_POLICY)
            return False
        # Join the fan-out (and so the broadcast group) before accepting: a notice sent the moment the
        # client sees the handshake complete must reach it.
        await self.fanout.add_connection(self)
        await self.accept()
        self.accepted = True
        CONNECTIONS.labels(self.protocol_name).inc()
        logger.info(
            "ws %s connected: user=%s protocol=%s", self.connection_id, self.user.get_username(), self.protocol_name
        )
        expires_at = self.scope.get("token_expires_at")
        if expires_at:
            delay = max(0.0, expires_at - time.time())
            self._expiry = asyncio.get_running_loop().call_later(delay, lambda: asyncio.ensure_future(self.expire()))
        return True

    async def take_slot(self) -> bool:
        """Count the connection against its user's cap (realtime.limits); False if the user holds as
        many as the cap allows already. Not counted: an unauthenticated connection (refused anyway),
        one on a stopping process (sent elsewhere), any when the cap is 0 (Redis is not asked)."""
        user = self.user
        if self.slot is not None or self.scope.get("auth_error") or user is None or not user.is_authenticated:
            return True
        cap = limits.cap_for(user)
        if not cap or self.fanout.stopping:
            return True
        member = self.slot = self.fanout.slots.member(self.connection_id)  # released even if cancelled mid-take
        if not await self.fanout.slots.take(user.pk, member, cap):
            self.slot = None
            logger.info(
                "%s %s refused: user=%s holds %d connection(s) already",
                self.protocol_name,
                self.connection_id,
                user.get_username(),
                cap,
            )
            return False
        self.slot = member
        return True

    def release_slot(self) -> None:
        if self.slot is not None:
            self.fanout.slots.release(self.slot)
            self.slot = None

    async def expire(self) -> None:
        """The token ran out: nothing more is sent or done with it, even for frames still in flight."""
        logger.info("ws %s: token expired", self.connection_id)
        AUTH_FAILURES.labels("token_expired").inc()
        self.user = AnonymousUser()
        for campaign_id in list(self.subscriptions):
            await self.drop_subscription(campaign_id)
        await self.send_error(ClientError("token_expired"))
        await self.close(CLOSE_UNAUTHENTICATED)

    async def key_revoked(self) -> None:
        """The API key the connection was opened with was revoked: as an expired token, but final."""
        if not self.user.is_authenticated:
            return
        logger.info("ws %s: API key revoked", self.connection_id)
        AUTH_FAILURES.labels("key_revoked").inc()
        self.user = AnonymousUser()
        for name in list(self.subscriptions):
            await self.drop_subscription(name)
        await self.send_error(ClientError("unauthenticated", MESSAGES["key_revoked"]))
        await self.close(CLOSE_UNAUTHENTICATED)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self.release_slot()
        if self.fanout is not None and self in self.fanout.connections:
            for campaign_id in list(self.subscriptions):
                await self.drop_subscription(campaign_id)
            self.fanout.remove_connection(self)
            CONNECTIONS.labels(self.protocol_name).dec()
            logger.info("ws %s disconnected: code=%s", self.connection_id, message.get("code"))
        # channels' websocket_disconnect without its group_discard loop (a session joins no group: the
        # fan-out does) and its aclose_old_connections(), a trip to the database thread per closed
        # socket for nothing (every database call here closes stale connections around itself).
        await self.disconnect(message["code"])
        raise StopConsumer()

    # --- limits ----------------------------------------------------------------------------------------

    def check_size(self, text: str | bytes) -> None:
        if len(text) > settings.WS_MAX_FRAME_BYTES or (
            isinstance(text, str) and len(text.encode()) > settings.WS_MAX_FRAME_BYTES
        ):
            raise ClientError("message_too_large", frame_limit_message())

    async def check_rate(self) -> bool:
        """True when the frame may be handled; the limit is per second, and a client that keeps
        exceeding it for three seconds in a row is closed with 1008."""
        now = clock()
        elapsed = now - self.window_start
        if elapsed >= 1.0:
            # A streak of seconds over the limit; a whole quiet second in between ends it.
            exceeded = self.window_frames > settings.WS_MAX_FRAMES_PER_SECOND
            self.over_limit_windows = self.over_limit_windows + 1 if exceeded and elapsed < 2.0 else 0
            self.window_start, self.window_frames = now, 0
        self.window_frames += 1
        if self.window_frames <= settings.WS_MAX_FRAMES_PER_SECOND:
            return True
        if self.over_limit_windows >= 2 or self.window_frames > 3 * settings.WS_MAX_FRAMES_PER_SECOND:
            logger.warning("ws %s closed: rate limit exceeded for too long", self.connection_id)
            await self.close(CLOSE_POLICY)
        elif self.window_frames == settings.WS_MAX_FRAMES_PER_SECOND + 1:
            await self.send_error(ClientError("rate_limited"))
        return False

    # --- commands (shared by every protocol) -------------------------------------------------------------

    async def visible_campaign(self, campaign_id: Any) -> Campaign:
        if not isinstance(campaign_id, str):
            raise ClientError("bad_request", "campaign_id must be a string.")
        campaign = await _visible_campaigns.get((self.user, self.user.is_staff, campaign_id))
        if campaign is None:
            raise ClientError("not_found")
        return campaign

    async def visible_stream(self, stream: Any) -> LogRef:
        """The account stream of the connection's user, or (staff only) the operations stream."""
        if stream == StreamKind.ACCOUNT:
            return await _account_streams.get(self.user.pk)
        if stream == StreamKind.OPS:
            if not self.user.is_staff:
                raise ClientError("not_found", MESSAGES["stream_not_found"])
            return stream_log(await database_sync_to_async(ops_stream)())
        raise ClientError("bad_request", 'stream must be "account" or "ops".')

    async def subscribe(self, campaign_id: Any, last_sequence: Any = None, family: str = "native") -> int:
        """Subscribe to a campaign (or resume from ``last_sequence``); returns its log's last sequence."""
        check_last_sequence(last_sequence)
        campaign = await self.visible_campaign(campaign_id)
        return await self.follow(campaign_log(campaign), last_sequence, family)

    async def subscribe_stream(self, stream: Any, last_sequence: Any = None, family: str = "native") -> int:
        """Subscribe to the account or operations stream (PROTOCOL.md §11), like a campaign."""
        check_last_sequence(last_sequence)
        return await self.follow(await self.visible_stream(stream), last_sequence, family)

    async def follow(self, log: LogRef, last_sequence: int | None, family: str, *, counted: bool = True) -> int:
        """Follow a log from now, or from ``last_sequence`` (resume; ``counted`` as a reconnection unless
        it is the position of a snapshot just sent); returns the log's current last sequence."""
        if log.name not in self.subscriptions and len(self.subscriptions) >= settings.WS_MAX_SUBSCRIPTIONS:
            raise ClientError(
                "too_many_subscriptions", f"At most {settings.WS_MAX_SUBSCRIPTIONS} subscriptions per connection."
            )
        await self.drop_subscription(log.name)
        subscription = Subscription(self, log, family)
        self.subscriptions[log.name] = subscription
        SUBSCRIPTIONS.labels(self.protocol_name).inc()
        await self.fanout.join(subscription)  # from here on, live messages wait in its backlog
        position = await log_position(log, resuming=last_sequence is not None)
        await self.send_subscribed(subscription, position.last_sequence)
        if last_sequence is None:
            subscription.last_sent = position.last_sequence
        else:
            if counted:
                RECONNECTIONS.inc()
            logger.info(
                "ws %s resumes %s from %d (log at %d)",
                self.connection_id,
                log.name,
                last_sequence,
                position.last_sequence,
            )
            retained_from = position.first_retained or position.last_sequence + 1
            if last_sequence > position.last_sequence or last_sequence < retained_from - 1:
                snapshot = await self.log_snapshot(log)
                subscription.last_sent = snapshot["last_event_sequence"]
                await self.send_snapshot(subscription, snapshot, resync=True)
            else:
                subscription.last_sent = last_sequence
        subscription.positioned = True
        subscription.catch_up()
        return position.last_sequence

    async def drop_subscription(self, campaign_id: str) -> bool:
        subscription = self.subscriptions.pop(campaign_id, None)
        if subscription is None:
            return False
        subscription.close()
        SUBSCRIPTIONS.labels(self.protocol_name).dec()
        await self.fanout.leave(subscription)
        return True

    async def snapshot(self, campaign: Campaign) -> dict[str, Any]:
        return await self.log_snapshot(campaign_log(campaign))

    async def log_snapshot(self, log: LogRef) -> dict[str, Any]:
        """The snapshot of a campaign (PROTOCOL.md §6), or of a stream (its account or operations state)."""
        started = time.perf_counter()
        if log.kind == CAMPAIGN:
            snapshot = await database_sync_to_async(campaign_snapshot)(log.pk)
        else:
            snapshot = await database_sync_to_async(stream_snapshot)(log.pk)
        SNAPSHOT_LATENCY.observe(time.perf_counter() - started)
        return snapshot

    async def cancel_run(self, run_id: Any) -> str:
        from orchestration.services import run_cancel  # the consumer calls the service, never a task

        if not isinstance(run_id, str):
            raise ClientError("bad_request", "run_id must be a string.")

        def cancel() -> str:
            run = run_get_visible(self.user, run_id)
            return run_cancel(run=run, requested_by=self.user).public_id

        try:
            return await database_sync_to_async(cancel)()
        except NotFound:
            raise ClientError("not_found", "Run not found.") from None
        except ServiceError as exc:
            raise ClientError("bad_request", str(exc)) from None

    # --- what subclasses provide ------------------------------------------------------------------------

    async def on_connect(self) -> None:
        raise NotImplementedError

    async def send_error(self, error: ClientError, request_id: Any = None) -> None:
        raise NotImplementedError

    async def send_subscribed(self, subscription: Subscription, last_sequence: int) -> None:
        raise NotImplementedError

    async def send_snapshot(self, subscription: Subscription, snapshot: dict[str, Any], *, resync: bool) -> None:
        raise NotImplementedError

    async def refuse_unavailable(self) -> None:
        """Native: an ``internal_error`` frame saying the database is down, then close 1013 (try again
        later). The SignalR hub overrides this."""
        await self.send_error(ClientError("internal_error", DATABASE_DOWN))
        await self.close(CLOSE_TRY_AGAIN_LATER)

    async def delivery_failed(self) -> None:
        """A subscription could not be caught up (the log could not be read). Rather than live on
        without its events, the connection ends; the client reconnects and resumes from its last
        sequence. Native: an ``internal_error`` frame, then close 1011."""
        await self.send_error(ClientError("internal_error"))
        await self.close(CLOSE_INTERNAL_ERROR)
