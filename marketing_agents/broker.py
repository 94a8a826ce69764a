"""The Celery broker transport: kombu's Redis transport, made to survive a broker restart.

kombu 5.7 / celery 5.7 kill the worker when Redis goes away while a task with ``acks_late`` is
running (``Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")``):

1. the consumer loses its connection and calls ``on_connection_error_after_connected``;
2. that calls ``connection.collect()``, which closes the default channel (restoring the unacked
   message fails: Redis is down) and then detaches the transport (``transport.client = None``);
3. it then calls ``connection.close()``, which closes the same channel again; restoring the
   unacked message once more builds a connection pool from ``transport.client``, now ``None``;
4. the ``AttributeError`` is not a connection error, so ``ignore_errors`` lets it through and the
   worker stops.

Here the channel says what really happened, a lost connection, which ``close()`` ignores; the
consumer then reconnects as it does for any other broker outage. The message stays in Redis's
unacked set (kombu restores it after the visibility timeout), or is gone with an emptied Redis;
either way the recovery task (``orchestration.services.runs_recover``) finds the step by its lease
and queues it again, so nothing depends on that message.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class ClosedConnectionGuard:
    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)


class Channel(ClosedConnectionGuard, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(ClosedConnectionGuard, kombu_redis.SentinelChannel):
    """The same guard on kombu's Sentinel transport (REDIS_URL names a Sentinel set): its pools are
    built from ``_connparams`` too, before it asks the Sentinels for the current primary."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
