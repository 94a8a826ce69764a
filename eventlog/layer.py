"""Sending to the channel layer from synchronous code (services, Celery tasks, management commands).

``async_to_sync`` from a thread with no event loop builds and tears down a loop, and with it a
Redis connection pool, on every call. Synchronous publishers instead hand their coroutines to one
long-lived loop thread per process, which keeps its pool warm. The thread is created lazily and
again after a fork (Celery's prefork pool), since a thread does not survive ``fork()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 5.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="channel-layer-sender", daemon=True)
            thread.start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def run_sync(coro: Coroutine[Any, Any, Any], timeout: float = SEND_TIMEOUT_SECONDS) -> Any:
    """Run a coroutine on the sender loop and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, _background_loop()).result(timeout)


def realtime_layer() -> Any:
    """The layer between publishers and the web processes' fan-outs (settings.REALTIME_LAYER)."""
    return get_channel_layer("realtime")


def watch_reconnects(layer: Any, callback: Callable[[Any], Awaitable[None]]) -> bool:
    """Call ``callback`` each time the pub/sub layer's Redis connection is made again.

    channels_redis accepts ``on_reconnect`` but never calls it; redis-py does call the connection's
    connect callbacks on every reconnect (that is how it resubscribes). So the callback is
    registered there, after the pub/sub connection's own, on each shard's connection of the running
    loop's layer. Returns False for a layer without one (the core layer: the fan-out sees its receive
    fail instead). redis-py keeps the callback as a weak method: its owner must outlive the layer.
    """
    loop_layer = getattr(layer, "_get_layer", None)
    if loop_layer is None:
        return False
    hooked = False
    for shard in getattr(loop_layer(), "_shards", ()):
        connection = getattr(getattr(shard, "_pubsub", None), "connection", None)
        if connection is not None:
            connection.register_connect_callback(callback)
            hooked = True
    return hooked


def group_send(group: str, message: dict[str, Any]) -> bool:
    """Send to a group; returns False (and logs) when the layer is unreachable instead of raising."""
    layer = realtime_layer()
    if layer is None:
        return False
    try:
        run_sync(layer.group_send(group, message))
    except Exception as exc:  # the event is already stored; clients fill the gap from the log
        logger.warning("channel layer send to %s failed: %s", group, type(exc).__name__)
        return False
    return True
