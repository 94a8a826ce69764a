"""Database reads of the realtime tier, batched across connections.

When a web process dies, its clients all come back at once to the others: thousands of sockets
each asking the database who their token's user is, whether they may see a campaign, where its log
ends and what they missed. One at a time, that was four trips to the database thread per socket,
each with its own queries (and a health-check query per trip). A :class:`BatchedRead` answers every
request of its kind that is waiting when the database thread gets to it with one trip and one
query per batch, so the cost of a storm grows with the number of distinct questions (campaigns,
users), not of sockets; when the process is quiet, a batch holds one request and waits for nothing.

A batch takes requests until the database thread starts on it, never after: a request is answered
by a read that began after it was made (the realtime consumers rely on this: a subscription joins
the fan-out, then reads where the log ends).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BatchedRead(Generic[K, V]):
    """``await read.get(key)``: ``fetch(keys)`` (run in the database thread) answers a batch of keys
    with a mapping; a key it leaves out gets ``default``."""

    def __init__(self, fetch: Callable[[list[K]], dict[K, V]], default: V | None = None) -> None:
        self.fetch = fetch
        self.default = default
        self._lock = threading.Lock()  # the event loop adds to the batch; the database thread closes it
        self._batch: dict[K, list[asyncio.Future]] | None = None

    async def get(self, key: K) -> V:
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            batch, new = self._batch, self._batch is None
            if new:
                batch = self._batch = {}
            batch.setdefault(key, []).append(future)
        if new:
            asyncio.ensure_future(self._run(batch))
        return await future

    def _close_and_fetch(self, batch: dict[K, list[asyncio.Future]]) -> dict[K, V]:
        with self._lock:
            if self._batch is batch:
                self._batch = None  # requests from now on start the next batch
            keys = list(batch)
        return self.fetch(keys)

    async def _run(self, batch: dict[K, list[asyncio.Future]]) -> None:
        try:
            results = await database_sync_to_async(self._close_and_fetch)(batch)
        except Exception as exc:  # the database is down, say: every request of the batch gets it
            settle(batch.values(), lambda future, error=exc: future.set_exception(error))
            return
        for key, futures in batch.items():
            value = results.get(key, self.default)
            settle([futures], lambda future, value=value: future.set_result(value))


def settle(groups: Iterable[list[asyncio.Future]], outcome: Callable[[asyncio.Future], None]) -> None:
    """Give ``outcome`` to every future still waiting (a request whose socket closed was cancelled)."""
    for futures in groups:
        for future in futures:
            if not future.done():
                outcome(future)
