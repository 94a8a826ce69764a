"""The SignalR-compatible hub, ``/hubs/campaign`` (docs/SIGNALR.md): the JSON and MessagePack hub
protocols over WebSockets.

It is a ``RealtimeSession`` like the native consumer: authentication, authorization, limits,
subscriptions and gap-free delivery are the shared ones; this class parses hub-protocol records and
renders frames as client-method invocations of the family a subscription was made with. Everything
is rendered as JSON records; a MessagePack connection gets the same messages re-encoded (once per
event and family, for every local MessagePack subscriber), and its binary messages are parsed into
the same dicts as JSON records, so the two protocols share every method and payload.

With stateful reconnect (realtime.signalr.stateful) every write goes through the connection's
``StatefulSession``: numbered, journaled in Redis, then sent by its writer task, in order. A
connection that comes back with the same token, on this process or another, is *resumed*: no
handshake, the server's Sequence and what the client has not acknowledged, then its subscriptions
carry on from the last durable event sent on each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, NamedTuple
from urllib.parse import parse_qs

from django.conf import settings

from eventlog.layer import realtime_layer
from eventlog.reads import CAMPAIGN, LogRef, events_after
from marketing_agents.errors import DATABASE_DOWN
from realtime import limits
from realtime.connection import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER
from realtime.consumers.base import (
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHENTICATED,
    MESSAGES,
    STREAMS,
    ClientError,
    RealtimeSession,
)
from realtime.delivery import Subscription
from realtime.metrics import ERRORS
from realtime.signalr import http as signalr_http
from realtime.signalr import stateful
from realtime.signalr.families import AGENT, ORCHESTRATOR, REALTIME_API, STREAM, TASK012, render_frame
from realtime.signalr.protocol import (
    ACK,
    CANCEL_INVOCATION,
    CLOSE,
    COMPLETION,
    INVOCATION,
    PING,
    RS,
    SEQUENCE,
    SEQUENCED,
    STREAM_INVOCATION,
    STREAM_ITEM,
    InvalidRecord,
    camel,
    handshake_protocol,
    invocation,
    json_records_to_messagepack,
    parse,
    record,
    unpack,
)

logger = logging.getLogger("realtime.connections")

CLOSE_NORMAL = 1000
# The client method a stream's snapshot arrives as (GetAccountSnapshot, and a resume too old for the log).
STREAM_SNAPSHOTS = {"account": "ReceiveAccountSnapshot", "ops": "ReceiveOpsSnapshot"}
# Codes whose error ends the connection: sent as a Close message, not as a Completion.
FATAL_CODES = {"unauthenticated", "token_expired"}
# How long a stateful connection waits for its journal before a Close message ends it regardless.
FLUSH_SECONDS = 2.0
STATE_LOST = "The connection's state was lost on the server; reconnect."
# Messages resent after a stateful reconnect, per WebSocket frame.
RESEND_PER_FRAME = 100
# A socket over the connection cap (not counted) is closed if its handshake, which it is refused in,
# does not come within this (ASP.NET Core's default HandshakeTimeout).
HANDSHAKE_TIMEOUT_SECONDS = 15.0


class Invocation:
    """The hub-method call being handled: its id (None for a fire-and-forget send) and whether it was answered."""

    def __init__(self, invocation_id: str | None) -> None:
        self.invocation_id = invocation_id
        self.completed = False
        # What its Completion returns when something else completes it (a subscription made on the way).
        self.result: Any = None
        self.has_result = False


class SignalRHubConsumer(RealtimeSession):
    """``/hubs/campaign``; the other hubs (realtime.consumers.sessions) are subclasses with their own methods."""

    protocol_name = "signalr"
    _handshake_timer: asyncio.TimerHandle | None = None
    methods: ClassVar[dict[str, HubMethod]]  # lower-cased name -> the method (below)

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def on_connect(self) -> None:
        self.handshake_done = False
        self.invocation: Invocation | None = None
        self.last_write = time.monotonic()
        self._pinger: asyncio.Task | None = None
        self._closed = False  # no more hub-protocol output
        self._socket_closed = False  # the WebSocket close was sent
        self.binary = False  # MessagePack (chosen in the handshake): binary frames both ways
        self.session_id: str | None = None  # a stateful-reconnect connection's id (its session in Redis)
        self.session: stateful.StatefulSession | None = None
        self._taken: stateful.Taken | None = None  # the session, taken before the handshake
        self._pending_subs: dict[str, list[Any]] = {}  # a resumed session's, until each is followed again
        self.over_cap = False  # the user held its cap of connections already when this one opened
        self._handshake_timer: asyncio.TimerHandle | None = None
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = query.get("id", [None])[0]
        if signalr_http.shutting_down():
            await self.close()
            return
        read = None if token is None else signalr_http.read_connection_token(token)
        if token is not None and read is None:
            logger.info("signalr %s refused: unknown or expired connection id", self.connection_id)
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        if read is not None and read[1]:
            # Refused before accept when it cannot go on: the client's stateful reconnect then fails at
            # once and it falls back to a fresh connection (a refusal after accept would have it retry).
            self.session_id = read[0]
            if not await self.take_slot():
                # Over the cap before the session is taken: a refusal steals nothing from a socket
                # still holding it, and the client's fallback to a fresh connection is told why.
                ERRORS.labels("too_many_connections").inc()
                await self.close()
                return
            state = await self.take_session()
            if state is None:
                await self.close()
                return
            if state == stateful.OPEN:
                await self.resume()
                return
        # Counted from the socket's opening (a socket that never sends its handshake counts too); over
        # the cap, the client is told in the handshake response, which must come first.
        self.over_cap = not await self.take_slot()
        # Accepted; whether the user may stay is told after the hub handshake, which must come first.
        await self.accept()
        if self.over_cap:  # not counted: it may not linger without its handshake (ASP.NET's timeout)
            self._handshake_timer = asyncio.get_running_loop().call_later(
                HANDSHAKE_TIMEOUT_SECONDS, lambda: asyncio.ensure_future(self.handshake_timed_out())
            )

    async def handshake_timed_out(self) -> None:
        if not self.handshake_done and not self._closed:
            logger.info("signalr %s closed: no handshake within %s s", self.connection_id, HANDSHAKE_TIMEOUT_SECONDS)
            self._closed = True
            await self.close(CLOSE_NORMAL)

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        """Once: RealtimeSession.start_session accepts again after the hub handshake."""
        if not self.accepted:
            self.accepted = True
            await super().accept(subprotocol, headers)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._closed = True
        self.release_slot()  # at once: a stateful resume coming right back must find it free
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        if self._pinger is not None:
            self._pinger.cancel()
        if self.session is not None:  # before the subscriptions go: the session keeps them
            held = self.fanout.sessions.get(self.session_id, set())
            held.discard(self)
            if not held:
                self.fanout.sessions.pop(self.session_id, None)
            await self.session.detach()
        await super().websocket_disconnect(message)

    async def say_goodbye(self) -> None:
        """The server is shutting down (marketing_agents.serve, before any application is cancelled):
        after the hub handshake, the hub's Close message with allowReconnect; then close 1001. A
        stateful connection gets no Close message: its session is kept and the socket closed, so the
        client reconnects with it (to another process) and misses nothing."""
        if self.session is not None and not self.session.ended and not self._closed:
            # Everything the client got is journaled already (messages still queued are not, and are
            # not needed: durable events come again from the log): no Redis trip per socket here.
            self.closing = True
            await self.close(CLOSE_GOING_AWAY)
        elif self.handshake_done and not self._closed:
            await self.close_with("The server is shutting down.", allow_reconnect=True, code=CLOSE_GOING_AWAY)
        else:
            await super().say_goodbye()

    async def close_with(self, error: str | None, *, allow_reconnect: bool = False, code: int = CLOSE_NORMAL) -> None:
        """A Close message (why, and whether to reconnect), then the WebSocket close."""
        if self._closed:
            return
        message: dict[str, Any] = {"type": CLOSE}
        if error:
            message["error"] = error
        if allow_reconnect:
            message["allowReconnect"] = True
        await self.write(record(message), counted=False)
        await self.end_session()
        self._closed = True
        await self.close(code)

    async def end_session(self) -> None:
        """A Close message ends a stateful session (the client starts afresh, if it reconnects)."""
        if self.session is not None:
            await self.session.flush(FLUSH_SECONDS)
            await self.session.end()
        elif self._taken is not None and self.session_id is not None:
            try:
                await stateful.end(self.session_id, self._taken.epoch)
            except Exception as exc:  # it expires on its own
                logger.info("signalr %s: session not ended in Redis (%s)", self.connection_id, type(exc).__name__)

    # --- writing --------------------------------------------------------------------------------------------

    async def write(self, text: str | bytes, *, entries: list[str] | None = None, counted: bool = True) -> None:
        """Records to the client. On a stateful connection they are queued on its session: ``entries``
        journal them (the default: each record as it is, when they are ``counted`` messages)."""
        if not text:  # an event this family has no client method for
            return
        if self.client_gone():  # no more hub-protocol output (Connection.write drops it)
            self._closed = True
        session = self.session
        if session is not None:
            if not session.ended:
                if entries is None:
                    entries = [stateful.raw_entry(part) for part in text.split(RS)[:-1]] if counted else []
                session.send(text, entries)
            return
        await self.send_now(text)

    async def send_now(self, text: str | bytes) -> None:
        self.last_write = time.monotonic()  # what the ping loop goes by: what reached the socket
        if self.binary and isinstance(text, str):
            text = json_records_to_messagepack(text)
        await super().write(text)

    def buffered_bytes(self) -> int:
        """What waits in the transport, and on a stateful connection what waits for its journal; a
        stateful client with more than SIGNALR_UNACKED_LIMIT messages unacknowledged counts as a full
        buffer: it is behind (realtime.connection's slow-client policy), and its journal stays bounded."""
        waiting = super().buffered_bytes()
        session = self.session
        if session is None:
            return waiting
        if session.unacknowledged() > settings.SIGNALR_UNACKED_LIMIT:
            waiting += settings.WS_OUTBOUND_BUFFER_BYTES + 1
        return waiting + session.pending_bytes

    async def _ping_loop(self) -> None:
        """A Ping whenever nothing else was sent for WS_PING_INTERVAL_SECONDS (the client gives up after 30 s)."""
        interval = settings.WS_PING_INTERVAL_SECONDS
        while not self._closed:
            wait = self.last_write + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            # Straight to the socket even on a stateful connection: a ping is never journaled, and must
            # not wait behind a journal that Redis cannot take (the client gives up after 30 s of silence).
            await self.send_now(record({"type": PING}))

    # --- rendering (overrides of realtime.connection) ---------------------------------------------------------

    def render_event(self, subscription: Subscription, message: dict[str, Any]) -> str | bytes:
        # The hub hands one message dict to every local subscriber: render once per family and protocol.
        # (JSON for a stateful connection: its records are counted and journaled, then encoded.)
        rendered = message.setdefault("_signalr", {})
        key = (subscription.family, self.binary and self.session is None)
        if key not in rendered:
            text = rendered.get((subscription.family, False))
            if text is None:
                text = rendered[(subscription.family, False)] = render_frame(
                    subscription.family, json.loads(message["frame"])
                )
            if key[1]:
                rendered[key] = json_records_to_messagepack(text) if text else b""
        return rendered[key]

    async def push_event(self, subscription: Subscription, message: dict[str, Any]) -> bool:
        if self.session is None:
            return await super().push_event(subscription, message)
        if not self.has_room():
            return False
        await self.write_durable(subscription, message["sequence"], self.render_event(subscription, message))
        return True

    async def push_replayed(self, subscription: Subscription, frame: dict[str, Any]) -> bool:
        if self.session is None:
            return await super().push_replayed(subscription, frame)
        if not self.has_room():
            return False
        await self.write_durable(subscription, frame["sequence"], self.render_replayed(subscription, frame))
        return True

    async def write_durable(self, subscription: Subscription, sequence: int, text: str) -> None:
        """A durable event's messages, journaled as references to the log (one per rendered record)."""
        log = subscription.log
        entries = [
            stateful.durable_entry(log.kind, log.pk, log.name, sequence, subscription.family, index)
            for index in range(text.count(RS))
        ]
        await self.write(text, entries=entries)

    def render_replayed(self, subscription: Subscription, frame: dict[str, Any]) -> str:
        return render_frame(subscription.family, frame)

    def render_notice(self, message: dict[str, Any]) -> str:
        frame = json.loads(message["frame"])
        return invocation("ReceiveSystemNotice", camel({k: v for k, v in frame.items() if k != "type"}))

    # --- what RealtimeSession asks for ---------------------------------------------------------------------------

    async def send_error(self, error: ClientError, request_id: Any = None) -> None:
        ERRORS.labels(error.code).inc()
        if error.code in FATAL_CODES:
            await self.close_with(
                error.message, allow_reconnect=error.code == "token_expired", code=CLOSE_UNAUTHENTICATED
            )
        elif error.code == "message_too_large":
            await self.close_with(error.message, code=CLOSE_TOO_BIG)
        else:
            await self.complete(error=error.message)

    async def refuse_unavailable(self) -> None:
        """The database is down: the hub's Close message says so and allows a reconnect (a client with
        automatic reconnect tries again), then close 1013."""
        ERRORS.labels("unavailable").inc()
        await self.close_with(DATABASE_DOWN, allow_reconnect=True, code=CLOSE_TRY_AGAIN_LATER)

    async def delivery_failed(self) -> None:
        """A subscription's delivery broke: reconnecting (and re-joining) starts it afresh."""
        ERRORS.labels("internal_error").inc()
        await self.close_with(MESSAGES["internal_error"], allow_reconnect=True)

    async def send_subscribed(self, subscription: Subscription, last_sequence: int) -> None:
        # Answered here, before the subscription's catch-up can send any event.
        await self.complete()

    async def send_snapshot(self, subscription: Subscription, snapshot: dict[str, Any], *, resync: bool) -> None:
        if subscription.log.kind != CAMPAIGN:
            target = STREAM_SNAPSHOTS[subscription.name]
        elif subscription.family == TASK012:
            target = "ReceiveCampaignSnapshot"
        elif subscription.family in (ORCHESTRATOR, AGENT):  # the track-4 hubs: a session's state
            target = "ReceiveSessionSnapshot"
        else:
            target = "OnCampaignStatusReceived"
        await self.write(invocation(target, camel(snapshot)))

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        if code == 1008 and not self._closed:  # the rate limit, kept up (RealtimeSession.check_rate)
            await self.write(record({"type": CLOSE, "error": ClientError("rate_limited").message}), counted=False)
            await self.end_session()
        self._closed = True
        if self._socket_closed:
            return
        self._socket_closed = True
        await super().close(code, reason)

    async def complete(self, result: Any = None, *, error: str | None = None, has_result: bool = False) -> None:
        """The Completion of the current invocation (nothing for a fire-and-forget send, nor twice)."""
        current = self.invocation
        if current is None or current.completed:
            return
        current.completed = True
        if current.invocation_id is None:
            return
        message: dict[str, Any] = {"type": COMPLETION, "invocationId": current.invocation_id}
        if error is not None:
            message["error"] = error
        elif has_result:
            message["result"] = result
        elif current.has_result:
            message["result"] = current.result
        await self.write(record(message))

    # --- stateful reconnect (realtime.signalr.stateful) ---------------------------------------------------------

    async def take_session(self) -> str | None:
        """Before accept, for a stateful token: take its session (first connection or reconnect) and
        return its state then; None to refuse (no session, another user's, Redis unreachable)."""
        user = self.user
        if self.scope.get("auth_error") or user is None or not user.is_authenticated:
            logger.info("signalr %s refused: a stateful reconnect without valid credentials", self.connection_id)
            return None
        try:
            found = await stateful.peek(self.session_id)
            if found is None or found[0] != str(user.pk):
                logger.info("signalr %s refused: no such session (expired, ended or lost)", self.connection_id)
                return None
            owner = self.fanout.channel or ""
            self._taken = await stateful.take(self.session_id, user.pk, owner, state=found[1])
        except Exception as exc:
            logger.warning(
                "signalr %s refused: the session store is unreachable (%s)", self.connection_id, type(exc).__name__
            )
            return None
        if self._taken is None:
            return None
        if self._taken.previous_owner:  # whoever had it lets go (its writes would fail from now on anyway)
            try:
                await realtime_layer().send(
                    self._taken.previous_owner,
                    {"type": "signalr.release", "session": self.session_id, "epoch": self._taken.epoch},
                )
            except Exception as exc:
                logger.info("signalr %s: the previous owner was not told (%s)", self.connection_id, type(exc).__name__)
        return found[1]

    def start_stateful(self, taken: stateful.Taken, fields: dict[str, Any] | None = None) -> None:
        self.fanout.sessions[self.session_id].add(self)
        self.session = stateful.StatefulSession(
            self.session_id,
            taken,
            user_id=self.user.pk,
            deliver=self.send_now,
            lost=self.session_lost,
            subscriptions=self.stored_subscriptions,
            fields=fields,
        )

    def stored_subscriptions(self) -> dict[str, list[Any]]:
        """What a reconnect follows again: each subscription's log, family and last durable sequence sent."""
        subs = dict(self._pending_subs)
        for name, subscription in self.subscriptions.items():
            if subscription.positioned:
                log = subscription.log
                subs[name] = [log.kind, log.pk, subscription.family, subscription.last_sent]
        return subs

    async def resume(self) -> None:
        """The client is back with its token (after a dropped socket, on this process or another): no
        handshake; the server's Sequence, the messages it has not acknowledged, then its subscriptions
        from the last durable event sent on each (events published meanwhile come from the log)."""
        taken = self._taken
        try:
            resent = await self.journal_records(taken.entries)
        except LookupError as exc:  # an event it holds is no longer in the log: this session cannot go on
            logger.warning("signalr %s: session not resumed (%s)", self.connection_id, exc)
            await self.end_session()
            await self.close()
            return
        except Exception as exc:  # the database is away: refused, the session kept for a later attempt
            logger.warning("signalr %s: session not resumed (%s)", self.connection_id, type(exc).__name__)
            await self.close()
            return
        self.binary = taken.protocol == "messagepack"
        if not await self.start_session():  # the process is stopping: the next one resumes the session
            return
        self.handshake_done = True
        logger.info(
            "signalr %s resumed session %s: %d message(s) sent again, %d subscription(s)",
            self.connection_id,
            self.session_id[:8],
            len(resent),
            len(taken.subs),
        )
        self._pending_subs = dict(taken.subs)
        self.start_stateful(taken, {"owner": self.fanout.channel or ""})
        self.session.send(record({"type": SEQUENCE, "sequenceId": taken.base}), [])
        for start in range(0, len(resent), RESEND_PER_FRAME):
            self.session.send("".join(resent[start : start + RESEND_PER_FRAME]), [])  # journaled already
        self._pinger = asyncio.ensure_future(self._ping_loop())
        for name, (kind, _, family, last_sent) in taken.subs.items():
            try:
                if kind == CAMPAIGN:
                    await self.subscribe(name, last_sent, family=family)
                else:
                    await self.subscribe_stream(name, last_sent, family=family)
            except ClientError as error:  # no longer visible: that subscription ends
                logger.info("signalr %s: %s not followed again (%s)", self.connection_id, name, error.message)
            except Exception:
                logger.exception("signalr %s: %s not followed again", self.connection_id, name)
                await self.close(CLOSE_TRY_AGAIN_LATER)  # the session keeps it: the next reconnect tries again
                return
            self._pending_subs.pop(name, None)

    async def journal_records(self, entries: list[str]) -> list[str]:
        """The journal's messages as records to send again: durable events rendered from the log."""
        parsed = [stateful.parse_entry(entry) for entry in entries]
        wanted: dict[LogRef, list[int]] = {}
        for kind, value in parsed:
            if kind == stateful.DURABLE:
                log_kind, pk, name, sequence, _, _ = value
                wanted.setdefault(LogRef(log_kind, pk, name), []).append(sequence)
        frames: dict[tuple[LogRef, int], dict[str, Any]] = {}
        for log, sequences in wanted.items():
            after, last = min(sequences) - 1, max(sequences)
            while after < last:
                page = await events_after(log, after)
                if not page:
                    break
                for sequence, frame in page:
                    frames[(log, sequence)] = frame
                after = page[-1][0]
        records = []
        for kind, value in parsed:
            if kind == stateful.RAW:
                records.append(value + RS)
                continue
            log_kind, pk, name, sequence, family, index = value
            frame = frames.get((LogRef(log_kind, pk, name), sequence))
            if frame is None:
                raise LookupError(f"event {sequence} of {name} is no longer in the log")
            records.append(render_frame(family, frame).split(RS)[index] + RS)
        return records

    async def release(self, epoch: int) -> None:
        """Another connection resumed this one's session (the layer told this process)."""
        if self.session is not None and self.session.epoch < epoch:
            self.session.stop()
            await self.session_lost()

    async def session_lost(self, out_of_step: bool = False) -> None:
        """The session went to another connection: this socket closes, without a Close message (which
        would end the session), and nothing more is written for it. Or its journal in Redis is not
        what this connection wrote (a Redis failover lost recent writes): resumed, it would reuse ids
        the client has seen, so the session ends, and the Close message says to start afresh."""
        self._closed = True
        self.closing = True
        if out_of_step:
            logger.warning("signalr %s: its session's journal was lost in Redis; ended", self.connection_id)
            await self.send_now(record({"type": CLOSE, "error": STATE_LOST, "allowReconnect": True}))
            try:
                await stateful.end(self.session_id, self.session.epoch)
            except Exception as exc:  # it expires on its own
                logger.info("signalr %s: session not ended in Redis (%s)", self.connection_id, type(exc).__name__)
        else:
            logger.info("signalr %s: its session continues on another connection", self.connection_id)
        await self.close(CLOSE_GOING_AWAY)

    # --- records from the client ------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self._closed or self.closing:
            return
        try:
            if text_data is None:
                data = bytes_data or b""
                self.check_size(data)
                if not self.handshake_done:
                    # The handshake is JSON for every protocol; a client may send it in a binary frame.
                    first, separator, rest = data.partition(RS.encode())
                    await self.handshake(first.decode("utf-8", "replace") + separator.decode(), rest=rest)
                    return
                if not self.binary:
                    raise InvalidRecord("Binary frames carry MessagePack; this connection chose the JSON protocol.")
                messages = unpack(data)
                if not messages and not await self.check_rate():  # an empty frame still counts
                    return
            else:
                self.check_size(text_data)
                if self.binary and self.handshake_done:
                    raise InvalidRecord("Text frames carry JSON; this connection chose the MessagePack protocol.")
        except ClientError as error:
            await self.send_error(error)
            return
        except InvalidRecord as error:
            logger.info("signalr %s: invalid message (%s)", self.connection_id, error)
            await self.close_with(f"Invalid message: {error}" if self.binary else str(error))
            return
        if text_data is None:
            await self.handle_all(messages)
            return
        if not self.handshake_done:  # its answer is a handshake response, whatever the frame holds
            await self.handshake(text_data)
            return
        if not text_data.endswith(RS):
            await self.close_with("Every record must end with the record separator (0x1E).")
            return
        if not self.user or not self.user.is_authenticated:
            return
        messages = []
        for text in text_data.split(RS)[:-1]:
            try:
                messages.append(parse(text))
            except InvalidRecord as error:
                await self.handle_all(messages)
                logger.info("signalr %s: invalid record (%s)", self.connection_id, error)
                await self.close_with(f"Invalid record: {error}")
                return
        await self.handle_all(messages)

    async def handle_all(self, messages: list[dict[str, Any]]) -> None:
        """Each message of a frame in turn (each counted by the rate limit: a frame may hold many)."""
        if not self.user or not self.user.is_authenticated:
            return
        session = self.session
        numbered = False
        try:
            for message in messages:
                if self._closed:
                    return
                numbered = await self.handle_one(message, session) or numbered
        finally:
            if numbered and session is not None and not session.ended:
                # After the answers, and journaled with them: what the client may stop keeping
                # (also for a frame of messages seen before a reconnect, which it still keeps).
                await self.write(record({"type": ACK, "sequenceId": session.handled}), counted=False)
                session.changed()

    async def handle_one(self, message: dict[str, Any], session: stateful.StatefulSession | None) -> bool:
        """Handle one message; True if it was one of the client's numbered ones (stateful reconnect)."""
        allowed = await self.check_rate()
        kind, number = message["type"], None
        if session is not None:
            if kind == ACK:
                await self.client_ack(session, message["sequenceId"])
                return False
            if kind == SEQUENCE:
                if not session.client_sequence(message["sequenceId"]):
                    await self.close_with("Sequence ID greater than amount of messages we've received.")
                return False
            if kind in SEQUENCED:
                number = session.client_message()
                if number is None:
                    return True  # handled before the reconnect: not again
        if not allowed:
            if kind in (INVOCATION, STREAM_INVOCATION) and message.get("invocationId") is not None:
                self.invocation = Invocation(message["invocationId"])
                await self.complete(error=ClientError("rate_limited").message)
                self.invocation = None
        else:
            await self.handle(message)  # answers errors itself: only a cancellation goes through
        if number is not None:
            session.handled_through(number)
        return number is not None

    async def client_ack(self, session: stateful.StatefulSession, sequence_id: int) -> None:
        """The client acknowledges through ``sequence_id``. Past what this server sent, the session
        has lost messages it sent (a Redis failover that lost recent writes): ids would be reused
        and the client would drop new messages as seen, so the session ends; the client starts
        afresh (and resumes from its last sequence in onreconnected)."""
        if sequence_id > session.next_id - 1:
            logger.warning(
                "signalr %s: acknowledged %d of %d sent", self.connection_id, sequence_id, session.next_id - 1
            )
            await self.close_with(STATE_LOST, allow_reconnect=True)
            return
        session.ack(sequence_id)

    async def handshake(self, text: str, *, rest: bytes = b"") -> None:
        first, separator, text_rest = text.partition(RS)
        try:
            request = json.loads(first)
        except (ValueError, RecursionError):
            request = None
        protocol, error = handshake_protocol(request)
        if error is None and not separator:
            error = "Invalid handshake: it must end with the record separator (0x1E)."
        if error is not None:
            logger.info("signalr %s: handshake refused (%s)", self.connection_id, error)
            await self.refuse_handshake(error)
            return
        if self.over_cap:  # the client's start() fails with "Server returned handshake error: …"
            ERRORS.labels("too_many_connections").inc()
            await self.refuse_handshake(limits.refusal_message(limits.cap_for(self.user)))
            return
        self.handshake_done = True
        await self.write(record({}))  # JSON for every protocol
        self.binary = protocol == "messagepack"
        if self._taken is not None:
            if request["version"] >= 2:  # the versions that speak Ack and Sequence
                self.start_stateful(self._taken, {"protocol": protocol})
            else:
                await self.end_session()
        if not await self.start_session():  # refused, and told why (a stopping process keeps the session)
            return
        if self.session is not None:  # where another process sends its release, should it take over
            self.session.store(owner=self.fanout.channel or "")
        self._pinger = asyncio.ensure_future(self._ping_loop())
        if rest and self.binary:
            await self.receive(bytes_data=rest)
        elif rest:  # a JSON client's records after its handshake, in the same binary frame
            await self.receive(text_data=rest.decode("utf-8", "replace"))
        elif text_rest and not self.binary:
            await self.receive(text_data=text_rest)

    async def refuse_handshake(self, error: str) -> None:
        """A handshake response with an error (a stateful session ends with it), then close."""
        await self.write(record({"error": error}))
        await self.end_session()
        self._closed = True
        await self.close(CLOSE_NORMAL)

    async def handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == CLOSE:
            await self.end_session()
            self._closed = True
            await self.close(CLOSE_NORMAL)
            return
        if kind in (PING, CANCEL_INVOCATION, STREAM_ITEM, COMPLETION) or kind not in (INVOCATION, STREAM_INVOCATION):
            return  # pings keep the connection alive; there are no server streams; unknown types are ignored
        self.invocation = Invocation(message.get("invocationId"))
        try:
            if kind == STREAM_INVOCATION:
                raise ClientError("bad_request", "Streaming hub methods are not supported by this server.")
            if message.get("streamIds"):
                raise ClientError("bad_request", "Streaming arguments are not supported by this server.")
            await self.invoke(message["target"], message["arguments"])
        except ClientError as error:
            logger.info(
                "signalr %s user=%s: %r failed: %s",
                self.connection_id,
                self.user.get_username(),
                message["target"][:40],
                error.message,
            )
            await self.send_error(error)
        except Exception:
            logger.exception("signalr %s: %r failed", self.connection_id, message["target"][:40])
            await self.send_error(ClientError("internal_error"))
        else:
            await self.complete()
        finally:
            self.invocation = None

    async def invoke(self, target: str, arguments: list[Any]) -> None:
        method = self.methods.get(target.lower())
        if method is None:
            raise ClientError("unknown_type", f"Unknown hub method {target[:40]!r}.")
        required, optional = len(method.parameters), len(method.optional)
        if not required <= len(arguments) <= required + optional:
            if optional:
                counts = f"{required} {'or' if optional == 1 else 'to'} {required + optional} arguments"
            else:
                counts = f"{required} argument{'' if required == 1 else 's'}"
            raise ClientError("bad_request", f"{method.name} takes {counts}; got {len(arguments)}.")
        for parameter, argument in zip(method.parameters, arguments, strict=False):
            if parameter in method.objects:
                if not isinstance(argument, dict):
                    raise ClientError("bad_request", f"The {parameter} argument of {method.name} must be an object.")
            elif not isinstance(argument, str):
                raise ClientError("bad_request", f"The {parameter} argument of {method.name} must be a string.")
        await method.function(self, *arguments)

    # --- hub methods --------------------------------------------------------------------------------------------

    async def subscribe_to_campaign(self, campaign_id: str, last_sequence: Any = None) -> None:
        await self.subscribe(campaign_id, resume_from("SubscribeToCampaign", last_sequence), family=TASK012)

    async def join_campaign_group(self, campaign_id: str, last_sequence: Any = None) -> None:
        await self.subscribe(campaign_id, resume_from("JoinCampaignGroup", last_sequence), family=REALTIME_API)

    async def leave(self, campaign_id: str) -> None:
        if campaign_id not in STREAMS:  # a campaign method leaves campaigns only
            await self.drop_subscription(campaign_id)  # leaving a group one is not in is not an error

    async def get_campaign_snapshot(self, campaign_id: str) -> None:
        snapshot = camel(await self.snapshot(await self.visible_campaign(campaign_id)))
        await self.write(invocation("ReceiveCampaignSnapshot", snapshot))
        await self.complete(snapshot, has_result=True)

    async def request_campaign_status(self, campaign_id: str) -> None:
        snapshot = camel(await self.snapshot(await self.visible_campaign(campaign_id)))
        await self.write(invocation("OnCampaignStatusReceived", snapshot))

    async def cancel(self, run_id: str) -> None:
        run_id = await self.cancel_run(run_id)
        await self.write(invocation("ReceiveCancellationAcknowledgement", run_id))

    async def subscribe_to_account(self, last_sequence: Any = None) -> None:
        await self.subscribe_stream("account", resume_from("SubscribeToAccount", last_sequence), family=STREAM)

    async def subscribe_to_ops(self, last_sequence: Any = None) -> None:
        await self.subscribe_stream("ops", resume_from("SubscribeToOps", last_sequence), family=STREAM)

    async def unsubscribe_from_account(self) -> None:
        await self.drop_subscription("account")

    async def unsubscribe_from_ops(self) -> None:
        await self.drop_subscription("ops")

    async def get_account_snapshot(self) -> None:
        snapshot = camel(await self.log_snapshot(await self.visible_stream("account")))
        await self.write(invocation(STREAM_SNAPSHOTS["account"], snapshot))
        await self.complete(snapshot, has_result=True)


def resume_from(method: str, last_sequence: Any) -> int | None:
    """The optional ``lastSequence`` argument of a subscription: the last sequence the client saw, to
    resume from (PROTOCOL.md §5, ``subscribe`` with ``last_sequence``). Left out, or null (what a .NET
    ``long?`` or a JavaScript ``undefined`` sends), it is a plain subscription."""
    if last_sequence is None:
        return None
    if isinstance(last_sequence, int) and not isinstance(last_sequence, bool) and last_sequence >= 0:
        return last_sequence
    if isinstance(last_sequence, str):
        got = "a string"
    elif isinstance(last_sequence, (dict, list)):
        got = "an object" if isinstance(last_sequence, dict) else "an array"
    else:  # true/false, a float, a negative integer (or, over MessagePack, bytes or a timestamp)
        try:
            got = json.dumps(last_sequence)[:24]
        except (TypeError, ValueError):
            got = f"a value of type {type(last_sequence).__name__}"
    raise ClientError(
        "bad_request",
        f"The lastSequence argument of {method} must be a non-negative integer "
        f"(the last event sequence received); got {got}.",
    )


class HubMethod(NamedTuple):
    name: str
    function: Callable[..., Awaitable[None]]
    parameters: tuple[str, ...]  # required: strings, but for those named in ``objects``
    optional: tuple[str, ...] = ()  # checked by the method itself
    objects: tuple[str, ...] = ()  # the parameters that are objects (a request), checked by the method


def method_table(*methods: HubMethod) -> dict[str, HubMethod]:
    """A hub's methods by lower-cased name (hub method names are case-insensitive)."""
    return {method.name.lower(): method for method in methods}


_CAMPAIGN = ("campaignId",)
_RESUMABLE = ("lastSequence",)
HUB_METHODS = SignalRHubConsumer.methods = method_table(
    HubMethod("SubscribeToCampaign", SignalRHubConsumer.subscribe_to_campaign, _CAMPAIGN, _RESUMABLE),
    HubMethod("UnsubscribeFromCampaign", SignalRHubConsumer.leave, _CAMPAIGN),
    HubMethod("GetCampaignSnapshot", SignalRHubConsumer.get_campaign_snapshot, _CAMPAIGN),
    HubMethod("CancelRun", SignalRHubConsumer.cancel, ("runId",)),
    HubMethod("JoinCampaignGroup", SignalRHubConsumer.join_campaign_group, _CAMPAIGN, _RESUMABLE),
    HubMethod("LeaveCampaignGroup", SignalRHubConsumer.leave, _CAMPAIGN),
    HubMethod("RequestCampaignStatus", SignalRHubConsumer.request_campaign_status, _CAMPAIGN),
    HubMethod("SubscribeToAccount", SignalRHubConsumer.subscribe_to_account, (), _RESUMABLE),
    HubMethod("UnsubscribeFromAccount", SignalRHubConsumer.unsubscribe_from_account, ()),
    HubMethod("GetAccountSnapshot", SignalRHubConsumer.get_account_snapshot, ()),
    HubMethod("SubscribeToOps", SignalRHubConsumer.subscribe_to_ops, (), _RESUMABLE),
    HubMethod("UnsubscribeFromOps", SignalRHubConsumer.unsubscribe_from_ops, ()),
)
