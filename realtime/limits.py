"""A cap on the realtime connections a user holds open at once: native sockets, SignalR hubs and event
streams together, across every web process. ``WS_MAX_CONNECTIONS_PER_USER`` (staff:
``WS_STAFF_MAX_CONNECTIONS_PER_USER``); 0 is no cap, and then Redis is not asked at all.

Each user's connections are a sorted set in Redis, ``realtime:conns:user:<id>``: one member per
connection (its web process's id and its own), scored with the time it lapses. Opening a connection
is one script (drop the lapsed members; add this one if fewer than the cap are left), sent with every
other connect, close and refresh the process has waiting at that moment: one round trip per turn of
the event loop, however many sockets arrive at once in a reconnect storm.

A process killed without closing its sockets (kill -9) cannot remove their members: they lapse
``TTL_SECONDS`` later, and until then count against their users. Every live process therefore
writes its own members again each presence interval (the fan-out's presence loop), which also puts
them back after Redis lost them (a restart) and records those admitted while Redis was away: with
Redis unreachable a connection is admitted (a limit is not worth an outage; PROTOCOL.md §9) and,
as the REST rate limit does (accounts/throttling.py), Redis is left alone for
``PAUSE_AFTER_ERROR_SECONDS``.

Expiry times come from the web hosts' clocks (``clock``): hosts whose clocks are more than
``TTL_SECONDS`` minus the presence interval apart would prune each other's members early (admitting
more than the cap, never fewer).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from marketing_agents import redisconf

logger = logging.getLogger(__name__)

KEY = "realtime:conns:user:{}"
# How long a member outlives the last time its process wrote it (every PRESENCE_SECONDS, 10 s).
TTL_SECONDS = 30
# After Redis failed, connections are admitted this long without asking it (each try could cost a timeout).
PAUSE_AFTER_ERROR_SECONDS = 30
# The presence loop's re-write goes out in pipelines of this many users, so that tens of thousands of
# connections never hold the event loop for long.
REFRESH_USERS_PER_PIPELINE = 500
# What a refused event stream's Retry-After says: a slot frees when a connection closes, not on a timer.
RETRY_AFTER_SECONDS = 10

# Expiry times are wall-clock times, shared by every host; tests move this clock rather than wait.
clock = time.time

# KEYS[1] the user's set; ARGV: now, ttl, member, cap. A member already there is admitted again: a
# take sent twice (a retry after a lost reply) is one take.
_TAKE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
    redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
    return 1
end
return 0
"""
_TAKE_SHA = hashlib.sha1(_TAKE.encode()).hexdigest()

_paused_until = 0.0  # clock()
_refusals = 0  # connections (and negotiations) this process refused for the cap
_sync_clients: dict[redisconf.RedisTarget, redis.Redis] = {}
# A connect must not wait seconds on a Redis that is away (redis-py's default retries back off for
# seconds); one immediate retry, on a new connection, carries a connect over a Redis restart.
_QUICK = {"socket_connect_timeout": 0.25, "socket_timeout": 0.5}


def cap_for(user: Any) -> int:
    """The user's cap; 0: not capped."""
    return settings.WS_STAFF_MAX_CONNECTIONS_PER_USER if user.is_staff else settings.WS_MAX_CONNECTIONS_PER_USER


def refusal_message(cap: int) -> str:
    return f"Too many open connections for this account (at most {cap}); close one and try again."


def refusals() -> int:
    return _refusals


def _count_refusal() -> None:
    global _refusals
    _refusals += 1


def _paused() -> bool:
    return clock() < _paused_until


def _pause(exc: BaseException) -> None:
    global _paused_until
    if not _paused():  # once per outage, not once per connection
        logger.warning(
            "connection cap not counted (%s): connections are admitted for %d s",
            type(exc).__name__,
            PAUSE_AFTER_ERROR_SECONDS,
        )
    _paused_until = clock() + PAUSE_AFTER_ERROR_SECONDS


def _key(user_id: int) -> str:
    return KEY.format(user_id)


def _sync_client() -> redis.Redis:
    target = redisconf.current()
    if target not in _sync_clients:
        _sync_clients[target] = redisconf.client(target, **_QUICK, retry=Retry(NoBackoff(), 1))
    return _sync_clients[target]


def at_cap(user: Any) -> int:
    """At SignalR negotiate (a synchronous view): the user's cap if they hold that many connections
    already, else 0. Only a check: the hub's handshake takes the slot (negotiate opens nothing)."""
    cap = cap_for(user)
    if not cap or _paused():
        return 0
    try:
        held = _sync_client().zcount(_key(user.pk), f"({clock()}", "+inf")
    except (redis.RedisError, OSError) as exc:
        _pause(exc)
        return 0
    if held < cap:
        return 0
    _count_refusal()
    return cap


class _Op:
    """Commands for the next pipeline; ``future`` gets the first one's result (a take's verdict)."""

    __slots__ = ("commands", "future", "take")

    def __init__(self, commands: list[tuple[str, tuple[Any, ...]]], *, take: bool = False) -> None:
        self.commands = commands
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.take = take


class ConnectionSlots:
    """The connections of one web process (one event loop; owned by its fan-out) that count against
    their users' caps. Every member it admitted is remembered here until released, so the presence
    loop can write them all again (``refresh``) whatever became of Redis meanwhile."""

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self.members: dict[str, int] = {}  # member -> user id
        self._deciding: set[str] = set()  # members whose take is in flight: not refreshed meanwhile
        self._client: aioredis.Redis | None = None
        self._pending: list[_Op] = []
        self._flusher: asyncio.Task | None = None

    def member(self, connection_id: str) -> str:
        """Connection ids are per process (12 hex digits); the process id makes them unique everywhere."""
        return f"{self.process_id}:{connection_id}"

    async def take(self, user_id: int, member: str, cap: int) -> bool:
        """True if the connection may open (and it is counted from now on); False if the user holds
        ``cap`` already. Redis unreachable: True. The member is remembered before the take is sent,
        so that a consumer cancelled while it waits (its script may have run) still releases it."""
        self.members[member] = user_id
        if _paused():
            return True
        self._deciding.add(member)
        try:
            args = (f"{clock():.3f}", TTL_SECONDS, member, cap)
            admitted = await self._run(_Op([("evalsha", (_TAKE_SHA, 1, _key(user_id), *args))], take=True))
        finally:
            self._deciding.discard(member)
        if not admitted:
            self.members.pop(member, None)
            _count_refusal()
            return False
        return True

    def release(self, member: str) -> None:
        """The connection closed: no longer counted. Never waits and never raises; a removal that
        fails (Redis away) leaves the member to lapse by its expiry."""
        user_id = self.members.pop(member, None)
        if user_id is None or _paused():
            return
        self._enqueue(_Op([("zrem", (_key(user_id), member))]))

    async def release_all(self, timeout: float) -> None:
        """Graceful shutdown: every local member removed, so that their users may reconnect elsewhere
        at once (not after the expiry)."""
        by_user = self._by_user()
        self.members.clear()
        if not by_user or _paused():
            return
        op = _Op([("zrem", (_key(user_id), *members)) for user_id, members in by_user.items()])
        try:
            await asyncio.wait_for(self._run(op), timeout)
        except TimeoutError:
            logger.info("connection cap: %d user(s) not released at shutdown; they lapse", len(by_user))

    async def refresh(self) -> None:
        """Write every local member again with a new expiry (the presence loop, every few seconds):
        kept alive, put back if Redis lost them, recorded if admitted while Redis was away."""
        by_user = self._by_user()
        if not by_user or _paused():
            return
        expires = f"{clock() + TTL_SECONDS:.3f}"
        users = list(by_user.items())
        for start in range(0, len(users), REFRESH_USERS_PER_PIPELINE):  # the event loop breathes between
            commands: list[tuple[str, tuple[Any, ...]]] = []
            for user_id, listed in users[start : start + REFRESH_USERS_PER_PIPELINE]:
                # As they are now: one released (or refused) while an earlier chunk was out is left out,
                # or this ZADD, sent after its ZREM, would count it again until it lapsed.
                members = [m for m in listed if self.members.get(m) == user_id and m not in self._deciding]
                if not members:
                    continue
                commands.append(("zadd", (_key(user_id), dict.fromkeys(members, expires))))
                commands.append(("expire", (_key(user_id), TTL_SECONDS)))
            if commands:
                await self._run(_Op(commands))
            if _paused():
                return

    async def close(self) -> None:
        """Tests, whose event loops come and go: finish what is queued and close the client."""
        if self._flusher is not None:
            await asyncio.wait([self._flusher], timeout=2)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _by_user(self) -> dict[int, list[str]]:
        by_user: dict[int, list[str]] = defaultdict(list)
        for member, user_id in self.members.items():
            if member not in self._deciding:  # a refresh must not count it before its take decides
                by_user[user_id].append(member)
        return by_user

    # --- batching: one pipeline in flight, the next one gathering meanwhile ------------------------------

    def _enqueue(self, op: _Op) -> _Op:
        self._pending.append(op)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return op

    async def _run(self, op: _Op) -> Any:
        return await self._enqueue(op).future

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            self._client = redisconf.async_client(redisconf.current(), **_QUICK, retry=AsyncRetry(NoBackoff(), 1))
        return self._client

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._execute(batch)
            except Exception as exc:  # Redis unreachable, or failing: admitted, and left alone a while
                _pause(exc)
                results = [exc] * len(batch)
            for op, result in zip(batch, results, strict=True):
                if op.future.done():  # its connection went away meanwhile
                    continue
                if op.take:
                    op.future.set_result(isinstance(result, Exception) or result == 1)
                else:
                    op.future.set_result(None)

    async def _execute(self, batch: list[_Op], *, reloaded: bool = False) -> list[Any]:
        """EVALSHA in a plain pipeline (redis-py's script pipelines ask SCRIPT EXISTS first: a second
        round trip each time); the script is loaded when Redis does not know it (after a restart) and
        those takes sent again (they did nothing the first time). An op's result is its first
        command's, or the first error among its commands."""
        client = self._redis()
        pipe = client.pipeline(transaction=False)
        for op in batch:
            for name, args in op.commands:
                getattr(pipe, name)(*args)
        replies = await pipe.execute(raise_on_error=False)
        results, index = [], 0
        for op in batch:
            mine = replies[index : index + len(op.commands)]
            index += len(op.commands)
            errors = [reply for reply in mine if isinstance(reply, Exception)]
            results.append(errors[0] if errors else mine[0])
        unknown = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if unknown and not reloaded:  # once: a Redis that forgets it again is treated as failing
            await client.script_load(_TAKE)
            again = await self._execute([batch[i] for i in unknown], reloaded=True)
            for i, result in zip(unknown, again, strict=True):
                results[i] = result
        errors = [result for result in results if isinstance(result, Exception)]
        if errors:
            _pause(errors[0])  # a command Redis refused (out of memory, a wrong type): as if it were away
        return results
