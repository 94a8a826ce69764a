"""SignalR stateful reconnect, backed by Redis and the event log (docs/SIGNALR.md).

A client that asks for it (``withStatefulReconnect()``) numbers the messages it sends and receives:
Invocation, StreamItem, Completion, StreamInvocation and CancelInvocation count, 1, 2, 3, ... each
way. Each side acknowledges (Ack) what it received; after a dropped socket the client opens a new one
with the same connection token, with no handshake, and each side sends Sequence(first id it will
send again) followed by everything the other has not acknowledged. The receiver drops ids it has
already seen, so the server must send exactly the same numbered messages again.

ASP.NET Core keeps those messages in the one process's memory. Here each connection has a *session*
in Redis that any web process can take over:

    signalr:session:<id>        hash: user, state (negotiated | open), epoch, owner (the owning
                                process's channel), protocol, base (id of the first journal entry,
                                the client's last Ack + 1), received (the client's last message
                                handled), subs (the subscriptions and the last durable sequence sent
                                on each)
    signalr:session:<id>:log    list: one entry per message sent and not yet acknowledged

The journal is written *ahead* of the socket: a batch of messages reaches the client only after its
entries are in Redis, so a process killed at any moment has journaled everything its client could
have seen. A durable event's entry is a reference (log, sequence, family, which of its rendered
messages), read again from the event log on resume; other messages (answers, snapshots, transient
chunks) are stored as they were sent. Every write is conditional on the session's ``epoch``, which a
takeover increments, so a process that lost its session (its client went elsewhere) can no longer
write to it; it closes its socket. ``received`` is written with the batch that answers the client's
message, and the server's Ack goes out only after it, so a message the client stops keeping has
been recorded as handled.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import NoScriptError

from marketing_agents import redisconf

logger = logging.getLogger("realtime.connections")

KEY = "signalr:session:{}"
LOG_KEY = "signalr:session:{}:log"
SEP = "\x1f"  # between the fields of a journal entry
DURABLE, RAW = "d", "r"
NEGOTIATED, OPEN = "negotiated", "open"
# How long a negotiated session waits for its first connection (as the connection token does).
NEGOTIATED_TTL = 65
# An attached session's keys are refreshed at least this often (their TTL is the window plus a minute).
REFRESH_SECONDS = 30
RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)

# Take a session: KEYS meta, log; ARGV user, owner, ttl, protocol ('' keeps it), the state expected.
_TAKE = """
local meta = redis.call('hmget', KEYS[1], 'user', 'state', 'owner', 'protocol', 'base', 'received', 'subs')
if not meta[1] then return {0} end
if meta[1] ~= ARGV[1] then return {-1} end
if meta[2] ~= ARGV[5] then return {-2} end
local epoch = redis.call('hincrby', KEYS[1], 'epoch', 1)
local protocol = meta[4] or 'json'
if ARGV[4] ~= '' then protocol = ARGV[4] end
redis.call('hset', KEYS[1], 'owner', ARGV[2], 'state', 'open', 'protocol', protocol)
redis.call('expire', KEYS[1], ARGV[3])
redis.call('expire', KEYS[2], ARGV[3])
local result = {1, epoch, meta[3] or '', protocol, meta[5], meta[6], meta[7]}
local entries = redis.call('lrange', KEYS[2], 0, -1)
for i = 1, #entries do result[#result + 1] = entries[i] end
return result
"""

# Commit a batch: KEYS meta, log; ARGV epoch, ttl (0: leave it; a new journal list gets the session's),
# acked, first id, n, n entries, field/value pairs.
# 1: done; -1: the session was taken over (or ended); -2: the journal is not where the batch expects, or
# an older owner wrote the session again after a Redis restart (its epoch is below this one's);
# -3: the session is gone (Redis restarted empty): its owner writes it again (_RESTORE).
# A batch whose entries are already there (a retry after a reply was lost) is not appended twice.
_COMMIT = """
local meta = redis.call('hmget', KEYS[1], 'epoch', 'base')
if not meta[1] then return -3 end
if meta[1] ~= ARGV[1] then
  if tonumber(meta[1]) < tonumber(ARGV[1]) then return -2 end
  return -1
end
local base = tonumber(meta[2])
local first, n = tonumber(ARGV[4]), tonumber(ARGV[5])
local length = redis.call('llen', KEYS[2])
local nxt = base + length
if nxt == first then
  for i = 6, 5 + n, 1000 do
    redis.call('rpush', KEYS[2], unpack(ARGV, i, math.min(i + 999, 5 + n)))
  end
  if length == 0 and n > 0 then redis.call('pexpire', KEYS[2], redis.call('pttl', KEYS[1])) end
elseif nxt ~= first + n then
  return -2
end
local acked = tonumber(ARGV[3])
if acked >= base then
  redis.call('ltrim', KEYS[2], acked - base + 1, -1)
  redis.call('hset', KEYS[1], 'base', acked + 1)
end
if #ARGV > 5 + n then redis.call('hset', KEYS[1], unpack(ARGV, 6 + n, #ARGV)) end
if ARGV[2] ~= '0' then
  redis.call('expire', KEYS[1], ARGV[2])
  redis.call('expire', KEYS[2], ARGV[2])
end
return 1
"""

# Write a lost session again from its owner's memory: KEYS meta, log; ARGV user, epoch, owner, protocol,
# base, received, subs, ttl, then the entries not acknowledged. 0 if it exists (someone else made it).
_RESTORE = """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
redis.call('hset', KEYS[1], 'user', ARGV[1], 'state', 'open', 'epoch', ARGV[2], 'owner', ARGV[3],
           'protocol', ARGV[4], 'base', ARGV[5], 'received', ARGV[6], 'subs', ARGV[7])
redis.call('del', KEYS[2])
for i = 9, #ARGV, 1000 do
  redis.call('rpush', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('expire', KEYS[1], ARGV[8])
redis.call('expire', KEYS[2], ARGV[8])
return 1
"""

_END = """
if redis.call('hget', KEYS[1], 'epoch') == ARGV[1] then redis.call('del', KEYS[1], KEYS[2]) return 1 end
return 0
"""


class SessionLost(Exception):
    """The session was taken over by another connection, ended, or its journal is not as expected."""


class JournalOutOfStep(SessionLost):
    """The journal in Redis is not where this connection left it (a failover lost recent writes):
    ids would be reused, so the session must end rather than be resumed."""


class SessionMissing(Exception):
    """The session is not in Redis any more (Redis restarted without its data)."""


# --- the store ------------------------------------------------------------------------------------------------

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()
_sync_client: list[Any] = []


def _client() -> aioredis.Redis:
    """One client (a pool) per event loop: one per web process under daphne."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = redisconf.async_client(
            redisconf.current(), socket_timeout=2, socket_connect_timeout=2
        )
    return client


async def close_client() -> None:
    """Close this event loop's client (tests, whose loops come and go)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


class _Batcher:
    """The commits of every session of the process, sent to Redis together: one pipeline of EVALSHAs
    per turn of the event loop (an event fanned out to a thousand stateful sockets is one round trip,
    not a thousand), the next one gathering while it is in flight."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.sha = hashlib.sha1(_COMMIT.encode()).hexdigest()
        self.client = client
        self.pending: list[tuple[list[str], list[Any], asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def run(self, keys: list[str], args: list[Any]) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((keys, args, future))
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._flush())
        return await future

    async def _execute(self, batch: list[tuple[list[str], list[Any], asyncio.Future]]) -> list[Any]:
        """EVALSHA in a plain pipeline (redis-py's script pipelines ask SCRIPT EXISTS first, a second
        round trip each time); the script is loaded when Redis says it does not know it (after a
        restart) and those commits run again, which they may: a commit is idempotent."""
        pipe = self.client.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.evalsha(self.sha, len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)
        unknown = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if unknown:
            await self.client.script_load(_COMMIT)
            again = await self._execute([batch[i] for i in unknown])
            for i, result in zip(unknown, again, strict=True):
                results[i] = result
        return results

    async def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                results = await self._execute(batch)
            except Exception as exc:  # Redis unreachable: each session tries again on its own
                results = [exc] * len(batch)
            for (_, _, future), result in zip(batch, results, strict=True):
                if future.done():  # its writer was cancelled meanwhile
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = weakref.WeakKeyDictionary()


def _batcher() -> _Batcher:
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None or batcher.client is not _client():
        batcher = _batchers[loop] = _Batcher(_client())
    return batcher


def enabled() -> bool:
    return settings.SIGNALR_RECONNECT_WINDOW_SECONDS > 0


def attached_ttl() -> int:
    return settings.SIGNALR_RECONNECT_WINDOW_SECONDS + 60


def create(session_id: str, user_id: int) -> bool:
    """At negotiate (a synchronous view): a session waiting for its first connection. False when
    Redis cannot be reached: negotiate then does not offer stateful reconnect."""
    try:
        if not _sync_client:
            _sync_client.append(redisconf.client(redisconf.current(), socket_timeout=2, socket_connect_timeout=2))
        key = KEY.format(session_id)
        fields = {"user": str(user_id), "state": NEGOTIATED, "epoch": 0, "base": 1, "received": 0, "subs": "{}"}
        pipe = _sync_client[0].pipeline()
        pipe.hset(key, mapping=fields)
        pipe.expire(key, NEGOTIATED_TTL)
        pipe.execute()
        return True
    except Exception as exc:
        logger.warning("stateful reconnect not offered: Redis is unreachable (%s)", type(exc).__name__)
        return False


async def peek(session_id: str) -> tuple[str, str] | None:
    """(user id, state) of a session, or None if there is none (expired, ended, never made)."""
    user, state = await _client().hmget(KEY.format(session_id), "user", "state")
    if user is None or state is None:
        return None
    return user.decode(), state.decode()


@dataclass
class Taken:
    epoch: int
    previous_owner: str
    protocol: str
    base: int
    received: int
    subs: dict[str, list[Any]]
    entries: list[str]

    @property
    def next_id(self) -> int:
        return self.base + len(self.entries)


async def take(session_id: str, user_id: int, owner: str, *, state: str, protocol: str = "") -> Taken | None:
    """Make this connection the session's owner (the previous owner can write no more); None when the
    session is gone, is another user's, or is not in ``state``."""
    keys = [KEY.format(session_id), LOG_KEY.format(session_id)]
    client = _client()
    result = await client.eval(_TAKE, 2, *keys, str(user_id), owner or "", attached_ttl(), protocol, state)
    if result[0] != 1:
        return None
    epoch, previous, protocol_name, base, received, subs = result[1:7]
    return Taken(
        epoch=int(epoch),
        previous_owner=previous.decode() if isinstance(previous, bytes) else str(previous),
        protocol=protocol_name.decode(),
        base=int(base),
        received=int(received),
        subs=json.loads(subs),
        entries=[entry.decode("utf-8", "surrogatepass") for entry in result[7:]],
    )


async def commit(
    session_id: str, epoch: int, *, ttl: int, acked: int, first_id: int, entries: list[str], fields: dict[str, Any]
) -> None:
    keys = [KEY.format(session_id), LOG_KEY.format(session_id)]
    pairs = [item for key, value in fields.items() for item in (key, value)]
    encoded = [entry.encode("utf-8", "surrogatepass") for entry in entries]
    result = await _batcher().run(keys, [epoch, ttl, acked, first_id, len(entries), *encoded, *pairs])
    if result == -3:
        raise SessionMissing()
    if result == -2:
        raise JournalOutOfStep("journal out of step")
    if result != 1:
        raise SessionLost("taken over")


async def restore(
    session_id: str,
    *,
    user: str,
    epoch: int,
    owner: str,
    protocol: str,
    base: int,
    received: int,
    subs: str,
    entries: list[str],
) -> bool:
    """Write a session that Redis lost from what its owner holds; False if one exists meanwhile."""
    keys = [KEY.format(session_id), LOG_KEY.format(session_id)]
    encoded = [entry.encode("utf-8", "surrogatepass") for entry in entries]
    args = [user, epoch, owner, protocol, base, received, subs, attached_ttl(), *encoded]
    return await _client().eval(_RESTORE, 2, *keys, *args) == 1


async def end(session_id: str, epoch: int) -> None:
    await _client().eval(_END, 2, KEY.format(session_id), LOG_KEY.format(session_id), epoch)


# --- journal entries ---------------------------------------------------------------------------------------


def durable_entry(kind: str, pk: int, name: str, sequence: int, family: str, index: int) -> str:
    return SEP.join((DURABLE, kind, str(pk), name, str(sequence), family, str(index)))


def raw_entry(record_text: str) -> str:
    return RAW + SEP + record_text


def parse_entry(entry: str) -> tuple[str, Any]:
    """(RAW, record text) or (DURABLE, (kind, pk, name, sequence, family, index))."""
    kind, _, rest = entry.partition(SEP)
    if kind == RAW:
        return RAW, rest
    log_kind, pk, name, sequence, family, index = rest.split(SEP)
    return DURABLE, (log_kind, int(pk), name, int(sequence), family, int(index))


# --- one connection's session ----------------------------------------------------------------------------------


class StatefulSession:
    """The stateful side of one connection: ids for what it sends (written to the journal before the
    socket), the client's Acks, and the ids of the client's messages (duplicates after a reconnect
    are dropped). One writer task sends, in order; ``send`` only queues.

    ``deliver(data)`` writes to the socket; ``lost(out_of_step)`` is called once if another connection
    takes the session over (False) or its journal in Redis is not what was written (True: the session
    must end); ``subscriptions()`` gives what to store as ``subs``."""

    def __init__(
        self,
        session_id: str,
        taken: Taken,
        *,
        user_id: int,
        deliver: Callable[[str | bytes], Awaitable[None]],
        lost: Callable[[bool], Awaitable[None]],
        subscriptions: Callable[[], dict[str, list[Any]]],
        fields: dict[str, Any] | None = None,
    ) -> None:
        self.id = session_id
        self.epoch = taken.epoch
        self.next_id = taken.next_id  # the id of the next sequenced message this side sends
        self.committed_id = taken.next_id - 1  # the last id in the journal
        self.acked = taken.base - 1  # the last id the client acknowledged
        self._acked_written = self.acked
        self.received = taken.received  # the last client message taken in (duplicates are below it)
        self.handled = taken.received  # the last one handled: what is stored, and acknowledged
        self._received_written = taken.received
        self.next_receiving = taken.received + 1  # the id the client's next sequenced message has
        self._subs_written = json.dumps(taken.subs, sort_keys=True)
        self._subs_seen = taken.subs  # compared as a dict, serialized only when it changed
        self._extra = dict(fields or {})  # other fields for the next commit (the protocol, at first)
        # What Redis holds, to write it again should Redis lose it: the journal not yet acknowledged
        # (bounded by SIGNALR_UNACKED_LIMIT, trimmed by Acks) and the other fields.
        self._user_id = user_id
        self._journal: list[str] = list(taken.entries)
        self._stored = {"protocol": taken.protocol, "owner": ""}
        self._deliver, self._lost, self._subscriptions = deliver, lost, subscriptions
        self.queue: list[tuple[str | bytes | None, list[str]]] = []
        self.pending_bytes = 0
        self.ended = False  # taken over, ended or detached: nothing more is written to Redis
        self.closing = False  # the socket is gone: batches are journaled, not sent
        self._last_commit = self._ttl_at = time.monotonic()  # (the take set the keys' TTL)
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.ensure_future(self._run())
        # Wakes the writer now and then, so an idle session's keys are refreshed (see _stale).
        self._timer = asyncio.get_running_loop().call_later(REFRESH_SECONDS, self._refresh)
        self._committing = False  # a commit is in flight (never two for one session)
        if self._extra:
            self.changed()

    def _refresh(self) -> None:
        if not self.ended:
            self._wakeup.set()
            self._timer = asyncio.get_running_loop().call_later(REFRESH_SECONDS, self._refresh)

    # --- what the connection calls ------------------------------------------------------------------------

    def send(self, data: str | bytes | None, entries: list[str]) -> None:
        """Queue ``data`` (None: nothing to send, only entries to journal), which holds
        ``len(entries)`` sequenced messages."""
        self.queue.append((data, entries))
        self.next_id += len(entries)
        if data is not None:
            self.pending_bytes += len(data)
        self._idle.clear()
        self._wakeup.set()

    def unacknowledged(self) -> int:
        return self.next_id - 1 - self.acked

    def ack(self, sequence_id: int) -> None:
        """The client's Ack: the journal up to it can go (never past what was journaled)."""
        sequence_id = min(sequence_id, self.committed_id)
        if sequence_id > self.acked:
            self.acked = sequence_id
            self._idle.clear()
            self._wakeup.set()

    def client_sequence(self, sequence_id: int) -> bool:
        """The client's Sequence after a reconnect: its next message has this id. False when that is
        past what was handled (messages would be missing)."""
        if sequence_id > self.received + 1:
            return False
        self.next_receiving = sequence_id
        return True

    def client_message(self) -> int | None:
        """A sequenced message from the client: its id, to handle it; None for one seen before."""
        current = self.next_receiving
        self.next_receiving += 1
        if current <= self.received:
            return None
        self.received = current
        return current

    def handled_through(self, number: int) -> None:
        """The client's message ``number`` was handled (its answer queued): it may be stored as such.
        Stored earlier, a process that died while handling it would leave it unanswered for good."""
        self.handled = max(self.handled, number)

    def store(self, **fields: Any) -> None:
        """Fields to write with the next commit."""
        self._extra.update(fields)
        self.changed()

    def changed(self) -> None:
        """Something to store (received, the subscriptions) though nothing is sent."""
        self._idle.clear()
        self._wakeup.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until everything queued is journaled and sent (False if that took too long)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def detach(self, timeout: float = 2.0) -> None:
        """The socket is gone: journal what is queued (the next connection sends it), give up ownership
        and keep the session for the reconnect window."""
        if self.ended:
            return
        self.closing = True
        self._wakeup.set()
        await self.flush(timeout)
        in_flight = self._committing
        self._shut()
        if not self.queue and not in_flight:
            try:
                await self._commit(
                    [], {"owner": ""}, ttl=settings.SIGNALR_RECONNECT_WINDOW_SECONDS, first_id=self.committed_id + 1
                )
            except Exception as exc:  # the session then lives on with the old owner named: a takeover ends that
                logger.info("signalr session %s: detach not recorded (%s)", self.id[:8], type(exc).__name__)

    async def end(self) -> None:
        """The session is over (a Close message was sent): forget it."""
        if self.ended:
            return
        self._shut()
        try:
            await end(self.id, self.epoch)
        except Exception as exc:  # it expires on its own
            logger.info("signalr session %s: not ended in Redis (%s)", self.id[:8], type(exc).__name__)

    def stop(self) -> None:
        """Another connection has the session: stop without touching Redis."""
        self._shut()

    def _shut(self) -> None:
        self.ended = True
        self._task.cancel()
        self._timer.cancel()

    # --- the writer ----------------------------------------------------------------------------------------

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = dict(self._extra)
        if self.handled != self._received_written:
            fields["received"] = self.handled
        subs = self._subscriptions()
        if subs != self._subs_seen:
            text = json.dumps(subs, sort_keys=True)
            if text != self._subs_written:
                fields["subs"] = text
            else:
                self._subs_seen = subs
        return fields

    async def _commit(self, entries: list[str], fields: dict[str, Any], *, ttl: int, first_id: int) -> None:
        acked = self.acked
        try:
            await commit(self.id, self.epoch, ttl=ttl, acked=acked, first_id=first_id, entries=entries, fields=fields)
        except SessionMissing:
            logger.warning("signalr session %s: gone from Redis; written again", self.id[:8])
            await restore(
                self.id,
                user=str(self._user_id),
                epoch=self.epoch,
                owner=self._stored["owner"],
                protocol=self._stored["protocol"],
                base=self._acked_written + 1,
                received=self._received_written,
                subs=self._subs_written,
                entries=self._journal,
            )
            await commit(self.id, self.epoch, ttl=ttl, acked=acked, first_id=first_id, entries=entries, fields=fields)
        self._journal.extend(entries)
        del self._journal[: max(0, acked - self._acked_written)]
        self._last_commit = time.monotonic()
        self._acked_written = acked
        self.committed_id = first_id + len(entries) - 1
        if "received" in fields:
            self._received_written = fields["received"]
        if "subs" in fields:
            self._subs_written = fields["subs"]
            self._subs_seen = json.loads(fields["subs"])
        for key in fields:
            self._extra.pop(key, None)
            if key in self._stored:
                self._stored[key] = fields[key]

    async def _run(self) -> None:
        try:
            while not self.ended:
                await self._wakeup.wait()
                self._wakeup.clear()
                await self._drain()
                if not self.queue:
                    self._idle.set()
        except SessionLost as exc:
            logger.info("signalr session %s lost (%s)", self.id[:8], exc)
            self.ended = True
            self._timer.cancel()
            self._idle.set()
            await self._lost(isinstance(exc, JournalOutOfStep))
        except asyncio.CancelledError:
            self._idle.set()
            raise
        except Exception:  # a bug: the connection ends (its client resumes, or starts afresh)
            logger.exception("signalr session %s: the writer failed", self.id[:8])
            self.ended = True
            self._timer.cancel()
            self._idle.set()
            await self._lost(False)

    async def _drain(self) -> None:
        while True:
            batch, self.queue = self.queue, []
            entries = [entry for _, batch_entries in batch for entry in batch_entries]
            fields = self._fields()
            if entries or fields or self.acked != self._acked_written or self._stale():
                await self._commit_retrying(entries, fields)
            elif not batch:
                return
            for data, _ in batch:
                if data is None:
                    continue
                self.pending_bytes -= len(data)
                if not self.closing:
                    await self._deliver(data)

    def _stale(self) -> bool:
        return time.monotonic() - self._last_commit > REFRESH_SECONDS

    async def _commit_retrying(self, entries: list[str], fields: dict[str, Any]) -> None:
        """Commit, trying again while Redis is away (the batch waits meanwhile: the connection's
        outbound buffer counts it, so the slow-client policy applies); SessionLost is final."""
        first_id = self.committed_id + 1
        self._committing = True
        try:
            await self._commit_until_done(entries, fields, first_id)
        finally:
            self._committing = False

    async def _commit_until_done(self, entries: list[str], fields: dict[str, Any], first_id: int) -> None:
        attempt = 0
        while True:
            try:
                # The keys' TTL is refreshed every REFRESH_SECONDS, not with each commit.
                refresh = time.monotonic() - self._ttl_at > REFRESH_SECONDS
                await self._commit(entries, fields, ttl=attached_ttl() if refresh else 0, first_id=first_id)
                if refresh:
                    self._ttl_at = time.monotonic()
                if attempt:
                    logger.info("signalr session %s: journal written again", self.id[:8])
                return
            except SessionLost:
                raise
            except Exception as exc:
                if attempt == 0:
                    logger.warning(
                        "signalr session %s: journal not written (%s); retrying", self.id[:8], type(exc).__name__
                    )
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
                attempt += 1
