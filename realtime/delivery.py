"""Gap-free, ordered delivery of a log's events (a campaign's, an account's, operations') to one subscription.

The channel layer is at-most-once: channels-redis drops group messages for a channel over
capacity, and a process may miss messages while Redis is unreachable. So each subscription
remembers the last durable sequence it sent (``last_sent``) and treats a live message as a hint:

- the next sequence is sent at once (the fast path: the frame was serialized once, by the publisher);
- a sequence already sent is dropped;
- a sequence further ahead, or a chunk placed after an event not sent yet, means events are
  missing: the subscription stops taking the fast path, reads the missing range from the event
  log, sends it, and then goes through what arrived meanwhile (``catch_up``).

A resume (``last_sequence``) is the same catch-up, started from the client's sequence; live
messages that arrive while it reads the log wait in ``backlog`` and are de-duplicated after it.
Nothing is ever held that cannot be read again: durable events dropped anywhere (a full backlog, a
congested connection) are re-read from the log, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from eventlog import reads
from realtime.metrics import GAP_EVENTS, GAP_FILLS

if TYPE_CHECKING:
    from realtime.connection import Connection

logger = logging.getLogger(__name__)

BACKLOG_LIMIT = 1000


class Subscription:
    def __init__(self, connection: Connection, log: reads.LogRef, family: str = "native") -> None:
        self.connection = connection
        self.log = log
        self.name = log.name  # its key among the connection's subscriptions: a campaign id, "account", "ops"
        self.group = log.group  # its key in the fan-out
        self.family = family
        self.last_sent = 0
        self.positioned = False  # last_sent says where the client is (set by RealtimeSession.follow)
        # False while the log is being read (subscribe, resume, gap): live messages wait in backlog.
        self.ready = False
        self.backlog: list[dict[str, Any]] = []
        self.closed = False
        self._catching_up: asyncio.Task | None = None
        self._cause = "resume"  # what started the current catch-up (realtime_gap_fills)

    # --- live messages, from the fan-out ------------------------------------------------------------

    async def offer(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        if not self.ready:
            if not self.connection.congested:
                self._hold(message)
            elif message.get("sequence") is None:
                self.connection.hold_chunk(self, message)
            # else: a durable event for a congested connection is re-read from the log later
            return
        sequence = message.get("sequence")
        if sequence is None:  # a transient chunk: it belongs right after its after_sequence
            if message["after_sequence"] > self.last_sent:
                self._hold(message)
                self.catch_up("live_skip")
                return
            await self.connection.push_chunk(self, message)
            return
        if sequence <= self.last_sent:
            GAP_EVENTS.labels("duplicate_dropped").inc()
            return
        if sequence > self.last_sent + 1:
            self._hold(message)
            self.catch_up("live_skip")
            return
        if await self.connection.push_event(self, message):
            self.last_sent = sequence

    def _hold(self, message: dict[str, Any]) -> None:
        if len(self.backlog) >= BACKLOG_LIMIT:
            # Durable events can be read again from the log; chunks are allowed to be lost.
            self.backlog = [m for m in self.backlog if m.get("sequence") is not None][-BACKLOG_LIMIT // 2 :]
        self.backlog.append(message)

    # --- the slow path -------------------------------------------------------------------------------

    def catch_up(self, cause: str = "resume") -> None:
        """Read what is missing from the log and send it, then what arrived meanwhile (one task at a time)."""
        self.ready = False
        if self.closed or (self._catching_up is not None and not self._catching_up.done()):
            return
        self._cause = cause
        self._catching_up = asyncio.ensure_future(self._catch_up())

    async def _catch_up(self) -> None:
        started_from = self.last_sent
        try:
            while not self.closed:
                before = self.last_sent
                if not await self._send_from_log():
                    return  # the connection is congested; it calls catch_up again once it drains
                if self._drain_backlog_needs_log():
                    if self.last_sent == before:
                        # The log has nothing newer (e.g. pruned): what the backlog waits for will not come.
                        logger.warning("%s: dropping messages ahead of the log", self.name)
                        self.backlog = [m for m in self.backlog if (m.get("sequence") or 0) == self.last_sent + 1]
                    continue
                if not self.backlog:
                    self.ready = True
                    if self.last_sent > started_from:
                        GAP_FILLS.labels(self._cause).inc()
                    await self.connection.flush_chunks(self)
                    return
                await self._send_backlog()
        except Exception:
            logger.exception("catch-up of %s failed", self.name)
            await self.connection.delivery_failed()

    async def _send_from_log(self) -> bool:
        while True:
            page = await reads.events_after(self.log, self.last_sent)
            sent = 0
            for sequence, frame in page:
                if not await self.connection.push_replayed(self, frame):
                    GAP_EVENTS.labels("replayed").inc(sent)
                    return False
                self.last_sent = sequence
                sent += 1
            GAP_EVENTS.labels("replayed").inc(sent)  # once a page: a metric update costs a lock and an mmap write
            if len(page) < reads.PAGE:
                return True

    def _drain_backlog_needs_log(self) -> bool:
        """Drop what was sent meanwhile; True if the backlog shows events the log read has not reached."""
        kept = []
        for message in self.backlog:
            sequence = message.get("sequence")
            if sequence is not None and sequence <= self.last_sent:
                continue
            if sequence is None and message["after_sequence"] < self.last_sent:
                continue  # a chunk older than events already sent: the artifact has moved on
            kept.append(message)
        self.backlog = kept
        return any(
            (m.get("sequence") or 0) > self.last_sent + 1 or m.get("after_sequence", 0) > self.last_sent for m in kept
        )

    async def _send_backlog(self) -> None:
        while self.backlog:
            message = self.backlog[0]
            sequence = message.get("sequence")
            if sequence is None:
                if message["after_sequence"] != self.last_sent:
                    return  # needs the log first; the loop in _catch_up reads it
                self.backlog.pop(0)
                await self.connection.push_chunk(self, message)
            elif sequence == self.last_sent + 1:
                self.backlog.pop(0)
                if not await self.connection.push_event(self, message):
                    return
                self.last_sent = sequence
            else:
                return

    def close(self) -> None:
        self.closed = True
        self.backlog = []
        if self._catching_up is not None and not self._catching_up.done():
            self._catching_up.cancel()
