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
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Batch = dict  # key -> the futures of the requests for it, on one event loop


class BatchedRead(Generic[K, V]):
    """``await read.get(key)``: ``fetch(keys)`` (run in the database thread) answers a batch of keys
    with a mapping; a key it leaves out gets ``default``, and a key it maps to an exception raises
    it (for that key's requests only). If ``fetch`` raises, every request of the batch does."""

    def __init__(self, fetch: Callable[[list[K]], dict[K, V | Exception]], default: V | None = None) -> None:
        self.fetch = fetch
        self.default = default
        self._lock = threading.Lock()  # the event loop adds to a batch; the database thread closes it
        self._open: dict[asyncio.AbstractEventLoop, Batch] = {}  # one open batch per event loop

    async def get(self, key: K) -> V:
        hash(key)  # an unhashable key fails here, before it can break a batch
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            batch = self._open.get(loop)
            new = batch is None
            if new:
                batch = self._open[loop] = {}
            batch.setdefault(key, []).append(future)
        if new:
            loop.create_task(self._run(loop, batch))
        return await future

    def _close(self, loop: asyncio.AbstractEventLoop, batch: Batch) -> list[K]:
        with self._lock:
            if self._open.get(loop) is batch:
                del self._open[loop]  # requests from now on start the next batch
            return list(batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: Batch) -> None:
        try:
            results = await database_sync_to_async(lambda: self.fetch(self._close(loop, batch)))()
        except BaseException as exc:  # the database is down, or the loop is closing: nobody waits forever
            self._close(loop, batch)
            for futures in batch.values():
                settle(futures, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for key, futures in batch.items():
            settle(futures, results.get(key, self.default))


def settle(futures: list[asyncio.Future], outcome: object) -> None:
    """Answer every request still waiting (one whose socket closed was cancelled) with ``outcome``,
    raised if it is an exception."""
    for future in futures:
        if future.done():
            continue
        if isinstance(outcome, asyncio.CancelledError):
            future.cancel()
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
