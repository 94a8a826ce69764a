"""One per process: the only member of the channel-layer groups, fanning each message out locally.

The textbook pattern makes every consumer a group member, so an event costs one Redis message per
connection and tops out near 3,500 frames/s per process (../shared/BASELINES.md). Here the process
joins a log's group (a campaign's, an account's) once, when its first local subscriber arrives, and leaves when the last
one goes; an event is one layer message per process, and its frame, serialized once by the
publisher, is written to every local socket. A mass disconnect is a handful of group_discard calls,
not thousands.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings

from accounts.selectors import api_keys_revoked
from eventlog.layer import realtime_layer, watch_reconnects
from eventlog.publisher import group_name
from eventlog.reads import CAMPAIGN, log_heads
from marketing_agents import redisconf
from realtime.limits import ConnectionSlots, refusals
from realtime.metrics import DELIVERY_LATENCY, HEAD_CHECKS, LAYER_RECONNECTS, OUTBOUND_SIZE
from realtime.payloads import parse_emitted_at

if TYPE_CHECKING:
    from realtime.connection import Connection
    from realtime.delivery import Subscription

logger = logging.getLogger(__name__)

BROADCAST_GROUP = "broadcast"
TICK_SECONDS = 0.1
PRESENCE_SECONDS = 10
PRESENCE_TTL = 30
PRESENCE_PREFIX = "realtime:process:"
PRESENCE_USERS = 200


class FanOut:
    def __init__(self) -> None:
        self.process_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.subscriptions: dict[str, set[Subscription]] = defaultdict(set)
        self.connections: set[Connection] = set()
        # The local connections of each SignalR stateful session (the one that holds it, and one
        # it was taken from until that closes), by session id.
        self.sessions: dict[str, set[Connection]] = defaultdict(set)
        self.congested: set[Connection] = set()
        # The local connections counted against their users' caps (realtime.limits).
        self.slots = ConnectionSlots(self.process_id)
        self.channel: str | None = None
        self._tasks: list[asyncio.Task] = []
        self._lock = asyncio.Lock()
        self._groups_joined_at: dict[str, float] = {}
        # The head (last stored sequence) of each subscribed log at the previous head check, by group.
        self._heads: dict[str, int] = {}
        # Groups whose group_add failed (Redis unreachable): joined again by the tick.
        self._groups_pending: set[str] = set()
        self._pending_retry_at = 0.0
        self.stopping = False

    def cancel_tasks(self) -> None:
        # redis-py can swallow a CancelledError that lands mid-command; the loops check this flag too.
        self.stopping = True
        for task in self._tasks:
            task.cancel()

    # --- membership ------------------------------------------------------------------------------------

    async def _start(self) -> None:
        if self._tasks:
            return
        await self._connect()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read()),
            loop.create_task(self._tick()),
            loop.create_task(self._presence()),
            loop.create_task(self._check_heads()),
            loop.create_task(self._check_keys()),
        ]

    async def _connect(self) -> bool:
        """Get the fan-out's layer channel and join the broadcast group. With Redis unreachable this
        fails (logged once); ``_read`` tries again with backoff, and until then the connections are
        served from the log by the head check."""
        layer = realtime_layer()
        try:
            self.channel = await layer.new_channel("hub.")
        except Exception as exc:
            logger.warning("channel layer unreachable (%s); serving from the log until it is back", type(exc).__name__)
            return False
        watch_reconnects(layer, self._layer_reconnected)
        await self._group_add(BROADCAST_GROUP)
        for group in self.subscriptions:
            await self._group_add(group)
        return True

    async def add_connection(self, connection: Connection) -> None:
        if not self._tasks:  # the first connection of the process starts the fan-out
            async with self._lock:
                await self._start()
        self.connections.add(connection)

    def remove_connection(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self.congested.discard(connection)

    async def join(self, subscription: Subscription) -> None:
        group = subscription.group
        members = self.subscriptions.get(group)
        if self._tasks and members and group in self._groups_joined_at:
            # The group is joined already (its group_add has returned, not merely begun): no lock
            # (thousands of sockets re-attaching at once would queue on it, and asyncio's Lock scans
            # its waiters on each acquire). Nothing awaits between the check and the add, so a
            # concurrent leave cannot empty it in between.
            members.add(subscription)
            return
        async with self._lock:
            await self._start()
            first = not self.subscriptions[group]
            self.subscriptions[group].add(subscription)
            if first:
                await self._group_add(group)
                self._groups_joined_at[group] = time.monotonic()

    async def _group_add(self, group: str) -> None:
        """Join a layer group; with Redis unreachable, try again every second meanwhile. Until then
        the group's subscriptions are served from the log by the head check (PROTOCOL.md §9)."""
        if self.channel is None:  # not connected yet: _connect joins every group
            return
        try:
            await realtime_layer().group_add(group, self.channel)
        except Exception as exc:
            if group not in self._groups_pending:
                logger.warning("joining %s failed (%s); retrying, serving it from the log", group, type(exc).__name__)
            self._groups_pending.add(group)
        else:
            self._groups_pending.discard(group)

    async def leave(self, subscription: Subscription) -> None:
        group = subscription.group
        members = self.subscriptions.get(group)
        if members and subscription in members and len(members) > 1:
            members.discard(subscription)  # not the last: the group stays joined, no lock (see join)
            return
        async with self._lock:
            members = self.subscriptions.get(group)
            if not members or subscription not in members:
                return
            members.discard(subscription)
            if not members:
                del self.subscriptions[group]
                self._groups_joined_at.pop(group, None)
                self._groups_pending.discard(group)
                if self.channel is None:
                    return
                try:
                    await realtime_layer().group_discard(group, self.channel)
                except Exception as exc:  # an expired membership is harmless; it lapses by itself
                    logger.warning("group_discard for %s failed: %s", group, type(exc).__name__)

    async def close_all(self, timeout: float) -> None:
        """The process is stopping: every connection is told, in its protocol's way, to reconnect
        elsewhere, and the frames saying so get up to ``timeout`` seconds to leave."""
        self.stopping = True  # nothing more is fanned out
        connections = list(self.connections)
        for connection in connections:
            try:
                await connection.say_goodbye()
            except Exception as exc:  # its transport may be gone already
                logger.info("goodbye to %s failed: %s", getattr(connection, "connection_id", "-"), type(exc).__name__)
        deadline = time.monotonic() + timeout
        while any(connection.buffered_bytes() for connection in connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        logger.info("shutdown: %d connection(s) told to reconnect", len(connections))
        # Their users may reconnect to another process at once, not only once their slots lapse.
        await self.slots.release_all(timeout)

    # --- reading the layer -----------------------------------------------------------------------------

    async def _read(self) -> None:
        layer = realtime_layer()
        failures = 0
        while not self.stopping:
            if self.channel is None:
                failures += 1
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                if await self._connect():
                    failures = 0
                    LAYER_RECONNECTS.inc()
                    self._resync_all("layer_reconnect")
                continue
            try:
                message = await layer.receive(self.channel)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                logger.warning("channel layer receive failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                if failures == 1:
                    LAYER_RECONNECTS.inc()
                    self._resync_all("layer_reconnect")  # messages may have been lost while Redis was away
                continue
            try:
                await self.dispatch(message)
            except Exception:
                logger.exception("dispatching a %s message failed", message.get("type"))

    async def dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") == "campaign.event":
            await self._fan_out(message)
        elif message.get("type") == "system.notice":
            for connection in list(self.connections):
                await connection.push_notice(message)
        elif message.get("type") == "signalr.release":
            # A SignalR session resumed on another connection (realtime.signalr.stateful): its old one goes.
            for connection in list(self.sessions.get(message["session"], ())):
                await connection.release(message["epoch"])

    async def _fan_out(self, message: dict[str, Any]) -> None:
        # "log" names the group; a message from a publisher of the previous release (during a rolling
        # deploy) names its campaign instead.
        group = message.get("log") or group_name(message["campaign_id"])
        members = self.subscriptions.get(group)
        if not members:
            return
        for subscription in list(members):
            await subscription.offer(message)
        if message.get("sequence") is not None:
            DELIVERY_LATENCY.observe(max(0.0, time.time() - parse_emitted_at(message["frame"])))
            OUTBOUND_SIZE.observe(len(message["frame"]))

    def _resync_all(self, cause: str) -> None:
        for members in self.subscriptions.values():
            for subscription in members:
                subscription.catch_up(cause)

    async def _layer_reconnected(self, connection: Any = None) -> None:
        """The pub/sub connection to Redis is back (redis-py resubscribed it first): whatever was
        published while it was away is in the log; every subscription reads it now."""
        LAYER_RECONNECTS.inc()
        logger.warning("channel layer reconnected; catching up %d log(s) from the log", len(self.subscriptions))
        self._resync_all("layer_reconnect")

    # --- positioning: no event stays stranded -----------------------------------------------------------

    async def _check_heads(self) -> None:
        """Every REALTIME_HEAD_CHECK_SECONDS, one query reads the head of every log this process
        serves. A subscription still behind the head seen at the previous check has missed an event
        (its layer message was lost, or never sent because Redis was down) and no later event has
        come to reveal the gap: it catches up from the log. Waiting one interval leaves events in
        flight (stored, not yet fanned out) alone, so a healthy stream costs one query and nothing more.
        """
        while not self.stopping:
            await asyncio.sleep(settings.REALTIME_HEAD_CHECK_SECONDS)
            if not self.subscriptions:
                self._heads = {}
                continue
            try:
                await self.check_heads()
            except Exception as exc:  # the database is away: the next check tries again
                logger.warning("head check failed: %s", type(exc).__name__)

    async def check_heads(self) -> int:
        """One head check; returns how many subscriptions it set catching up."""
        logs = {next(iter(members)).log: group for group, members in self.subscriptions.items() if members}
        heads = await log_heads(list(logs))
        HEAD_CHECKS.inc()
        previous, self._heads = self._heads, {logs[log]: head for log, head in heads.items()}
        stranded = 0
        for group, head in self._heads.items():
            seen_before = min(head, previous.get(group, 0))
            for subscription in list(self.subscriptions.get(group, ())):
                # A congested connection is behind on purpose; it catches up once it drains.
                behind = subscription.ready and subscription.last_sent < seen_before
                if behind and not subscription.connection.congested:
                    stranded += 1
                    subscription.catch_up("head_check")
        return stranded

    async def _check_keys(self) -> None:
        """Every REALTIME_KEY_CHECK_SECONDS, one query asks which of the API keys that local sockets
        were opened with can no longer be used; those sockets are closed (4401). A revocation thus
        reaches every web process within that interval, whatever became of Redis meanwhile."""
        while not self.stopping:
            await asyncio.sleep(settings.REALTIME_KEY_CHECK_SECONDS)
            keyed = [c for c in self.connections if getattr(c, "scope", {}).get("api_key_id")]
            if not keyed:
                continue
            try:
                revoked = await database_sync_to_async(api_keys_revoked)({c.scope["api_key_id"] for c in keyed})
            except Exception as exc:  # the database is away: the next check tries again
                logger.warning("API key check failed: %s", type(exc).__name__)
                continue
            for connection in keyed:
                if connection.scope["api_key_id"] in revoked:
                    try:
                        await connection.key_revoked()
                    except Exception:  # one connection's failure must not spare the others
                        logger.exception("closing a revoked key's connection failed")

    # --- housekeeping ------------------------------------------------------------------------------------

    async def _tick(self) -> None:
        """Watch congested connections: resume them when they drain, close them if they stay behind."""
        while not self.stopping:
            await asyncio.sleep(TICK_SECONDS)
            for connection in list(self.congested):
                try:
                    await connection.check_congestion()
                except Exception:
                    logger.exception("congestion check failed")
            await self._refresh_groups()

    async def _refresh_groups(self) -> None:
        """Re-add long-lived memberships before the layer's group_expiry drops them."""
        now = time.monotonic()
        if self._groups_pending and now >= self._pending_retry_at:
            self._pending_retry_at = now + 1.0
            for group in list(self._groups_pending):
                await self._group_add(group)
        expiry = settings.CHANNEL_LAYERS["realtime"]["CONFIG"].get("group_expiry", 86400)
        for group, joined in list(self._groups_joined_at.items()):
            if now - joined > expiry / 2:
                self._groups_joined_at[group] = now
                await self._group_add(group)

    def presence(self) -> dict[str, Any]:
        """This process's counts, for the operators' view (realtime.presence): connections, by user too
        (whatever the cap), subscriptions by campaign, and connections refused for the cap."""
        counts: dict[str, int] = {}
        streams = 0  # account and operations subscriptions
        for members in self.subscriptions.values():
            if not members:
                continue
            log = next(iter(members)).log
            if log.kind == CAMPAIGN:
                counts[log.name] = len(members)
            else:
                streams += len(members)
        users = Counter(user_id for connection in self.connections if (user_id := _user_id(connection)) is not None)
        return {
            "process": self.process_id,
            "connections": len(self.connections),
            "subscriptions": sum(counts.values()),
            "campaigns": counts,
            "stream_subscriptions": streams,
            # The users with most connections here (not all: the record stays small with 50,000 users).
            "users": {str(user_id): n for user_id, n in users.most_common(PRESENCE_USERS)},
            "refused": refusals(),
            "updated_at": time.time(),
        }

    async def _presence(self) -> None:
        """Publish this process's connection counts to Redis, for the operators' view across processes."""
        client = redisconf.async_client(redisconf.current())
        key = PRESENCE_PREFIX + self.process_id
        try:
            while not self.stopping:
                try:
                    await client.set(key, json.dumps(self.presence()), ex=PRESENCE_TTL)
                except Exception as exc:
                    logger.warning("presence update failed: %s", type(exc).__name__)
                await self.slots.refresh()  # the connection cap's members: kept alive, or written again
                if self.stopping:
                    return
                await asyncio.sleep(PRESENCE_SECONDS)
        finally:
            await client.aclose()


def _user_id(connection: Connection) -> int | None:
    """The id of the connection's user; None once it is anonymous (an expired token, a revoked key)."""
    user = getattr(connection, "user", None)
    return user.pk if user is not None and user.is_authenticated else None


_fanouts: dict[asyncio.AbstractEventLoop, FanOut] = {}


async def close_all_connections(timeout: float = 1.0) -> None:
    """At shutdown (marketing_agents.serve): the running loop's fan-out, if it has one, closes its connections."""
    hub = _fanouts.get(asyncio.get_running_loop())
    if hub is not None:
        await hub.close_all(timeout)


def get_fanout() -> FanOut:
    """The fan-out of the running event loop (one per process under daphne; one per test loop in tests)."""
    loop = asyncio.get_running_loop()
    hub = _fanouts.get(loop)
    if hub is None:
        hub = _fanouts[loop] = FanOut()
    return hub
