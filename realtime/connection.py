"""What every realtime consumer shares: frames out, with a bounded outbound buffer per connection.

ASGI gives an application no way to see how far behind a client is. Under daphne, though, the
``send`` callable is ``partial(server.handle_reply, protocol)``, so the connection can read how
many bytes wait in Twisted's write buffer. Past WS_OUTBOUND_BUFFER_BYTES it is *congested*:
- durable events are not written (the subscription re-reads them from the log once it drains);
- chunks of one artifact are merged into one frame, and dropped when that grows too large;
- a connection still congested after WS_SLOW_CLIENT_SECONDS is closed with 1013 (try again later),
  and its transport aborted if the client does not even read the close frame; on reconnect it
  resumes from its last sequence.
Under the test communicator there is no transport, so nothing is ever congested there.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from django.conf import settings

from eventlog.publisher import dumps
from realtime.delivery import Subscription
from realtime.metrics import CHUNKS_SHED, INTERNALS_BROKEN, SLOW_CLIENTS_CLOSED

logger = logging.getLogger(__name__)

MERGED_CHUNK_LIMIT = 64 * 1024
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013


def transport_buffer_unreadable(transport: Any) -> None:
    """Twisted's write buffer is read through private fields (``dataBuffer``, ``offset``,
    ``_tempDataLen``; marketing_agents.serve checks them at start-up). Should a transport lack them,
    backpressure is off for that connection: said loudly, in the log and on /metrics."""
    INTERNALS_BROKEN.labels("transport_buffer").inc()
    logger.error(
        "backpressure is off: %s has no readable write buffer (a Twisted change?); slow clients are not detected",
        type(transport).__name__,
    )


class Connection:
    """Mixed into a consumer; subclasses render frames in their protocol's shape."""

    fanout: Any
    subscriptions: dict[str, Subscription]

    def connection_setup(self) -> None:
        self.subscriptions = {}
        self._congested_since: float | None = None
        self._held_chunks: dict[tuple[str, str], dict[str, Any]] = {}
        self.closing = False  # closed by the server (slow client, shutdown): the client is no longer heard
        self.output_dropped = False
        protocol = getattr(self.base_send, "args", (None,))[0]
        self._protocol = protocol if hasattr(protocol, "sendCloseFrame") else None
        self._transport = getattr(protocol, "transport", None)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close with any code. Autobahn (under daphne) refuses application close codes other than
        1000 and 3000-4999, but the protocol needs 1001, 1008, 1009 and 1013: write that close frame directly."""
        protocol = self._protocol
        if protocol is not None and isinstance(code, int) and code != 1000 and not 3000 <= code <= 4999:
            if protocol.state == protocol.STATE_OPEN:
                protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode() if reason else None, isReply=False)
            return
        await super().close(code, reason)

    async def say_goodbye(self) -> None:
        """The server is shutting down: close with 1001 (going away); the client reconnects to
        another process and resumes from its last sequence. The SignalR hub overrides this."""
        self.closing = True
        await self.close(CLOSE_GOING_AWAY)

    # --- rendering (the native protocol; the SignalR hub overrides these) --------------------------------

    def render_event(self, subscription: Subscription, message: dict[str, Any]) -> str:
        return message["frame"]

    def render_replayed(self, subscription: Subscription, frame: dict[str, Any]) -> str:
        return dumps(frame)

    def render_notice(self, message: dict[str, Any]) -> str:
        return message["frame"]

    # --- writing -------------------------------------------------------------------------------------------

    def client_gone(self) -> bool:
        """True once the WebSocket is no longer open (the client sent its close frame, or the server
        began closing): daphne passes a send to autobahn until the TCP connection is gone, and
        autobahn refuses it with "Attempt to send on a closed protocol". The reactor and this
        coroutine share one thread, so nothing can change between this check and the send."""
        protocol = self._protocol
        return protocol is not None and protocol.state != protocol.STATE_OPEN

    async def write(self, text: str | bytes) -> None:
        if self.client_gone():  # an answer, an event or a ping for a client that has gone: dropped
            if not self.output_dropped:
                self.output_dropped = True
                logger.info("ws %s: client gone, output dropped", self.connection_id)
            return
        await self.base_send({"type": "websocket.send", "bytes" if isinstance(text, bytes) else "text": text})

    def buffered_bytes(self) -> int:
        transport = self._transport
        if transport is None:
            return 0
        try:
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        except AttributeError:
            transport_buffer_unreadable(transport)
            self._transport = None  # counted once per connection, never congested from now on
            return 0

    @property
    def congested(self) -> bool:
        """Behind on writes: live frames wait (durable ones are re-read from the log once it drains)."""
        return self._congested_since is not None

    def has_room(self) -> bool:
        if self._congested_since is not None:
            return False
        if self.buffered_bytes() > settings.WS_OUTBOUND_BUFFER_BYTES:
            self._congested_since = time.monotonic()
            self.fanout.congested.add(self)
            logger.info("connection %s congested (%d bytes waiting)", self.connection_id, self.buffered_bytes())
            return False
        return True

    async def push_event(self, subscription: Subscription, message: dict[str, Any]) -> bool:
        if not self.has_room():
            return False
        await self.write(self.render_event(subscription, message))
        return True

    async def push_replayed(self, subscription: Subscription, frame: dict[str, Any]) -> bool:
        if not self.has_room():
            return False
        await self.write(self.render_replayed(subscription, frame))
        return True

    async def push_chunk(self, subscription: Subscription, message: dict[str, Any]) -> None:
        if self.has_room():
            await self.write(self.render_event(subscription, message))
        else:
            self.hold_chunk(subscription, message)

    async def push_notice(self, message: dict[str, Any]) -> None:
        if self.has_room():
            await self.write(self.render_notice(message))

    # --- congestion --------------------------------------------------------------------------------------

    def hold_chunk(self, subscription: Subscription, message: dict[str, Any]) -> None:
        """Merge a chunk into the one held for its artifact; past the limit, drop it."""
        frame = json.loads(message["frame"])
        key = (subscription.name, frame["data"].get("artifact_type", ""))
        held = self._held_chunks.get(key)
        if held is not None and held["after_sequence"] == message["after_sequence"]:
            merged = held["frame"]["data"]
            if len(merged["chunk"]) + len(frame["data"]["chunk"]) > MERGED_CHUNK_LIMIT:
                CHUNKS_SHED.labels("dropped").inc()
                return
            merged["chunk"] += frame["data"]["chunk"]
            merged["chunk_index"] = frame["data"]["chunk_index"]
            merged["is_complete"] = merged["is_complete"] or frame["data"]["is_complete"]
            CHUNKS_SHED.labels("merged").inc()
            return
        if held is not None:
            CHUNKS_SHED.labels("dropped").inc()
        self._held_chunks[key] = {"after_sequence": message["after_sequence"], "frame": frame}

    async def flush_chunks(self, subscription: Subscription) -> None:
        """Send the chunks held for the subscription's campaign while it caught up, if still in place."""
        if not self._held_chunks:
            return
        for key in [k for k in self._held_chunks if k[0] == subscription.name]:
            held = self._held_chunks.pop(key)
            if held["after_sequence"] != subscription.last_sent:
                CHUNKS_SHED.labels("dropped").inc()  # durable events moved past it meanwhile
                continue
            message = {"frame": dumps(held["frame"]), "after_sequence": held["after_sequence"], "sequence": None}
            await self.push_chunk(subscription, message)

    async def check_congestion(self) -> None:
        if self._congested_since is None:
            self.fanout.congested.discard(self)
            return
        if self.buffered_bytes() <= settings.WS_OUTBOUND_BUFFER_BYTES // 2:
            self._congested_since = None
            self.fanout.congested.discard(self)
            for subscription in self.subscriptions.values():
                subscription.catch_up("drained")
            return
        behind = time.monotonic() - self._congested_since
        if behind > settings.WS_SLOW_CLIENT_SECONDS and not self.closing:
            self.closing = True
            SLOW_CLIENTS_CLOSED.inc()
            logger.warning("connection %s closed with 1013: %.0f s behind", self.connection_id, behind)
            await self.close(CLOSE_TRY_AGAIN_LATER)
        elif behind > 2 * settings.WS_SLOW_CLIENT_SECONDS and self._transport is not None:
            self.fanout.congested.discard(self)
            self._transport.abortConnection()  # it did not even read the close frame
