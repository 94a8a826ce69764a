"""One Redis setting for every client: a plain URL, or a Sentinel set that follows a failover.

``REDIS_URL`` is either a redis-py URL (``redis://``, ``rediss://``, ``unix://``) or a Sentinel set:

    redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB][?sentinel_password=…]

(the convention of Redis-Sentinel-Url and others). PASSWORD is the data nodes' (``requirepass``);
Sentinels often have none, and one sent to a Sentinel without ``requirepass`` is refused, so theirs
is separate: ``sentinel_password``. Each consumer of Redis needs it in its own shape, built here: the channel layers'
host entry, Celery's broker URL and transport options (kombu's ``sentinel://`` transport), and
redis-py clients that ask the Sentinels for the current primary on every new connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"
# How long a question to one Sentinel may take before the next is asked.
SENTINEL_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class RedisTarget:
    url: str = field(repr=False)  # may hold a password
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    def __str__(self) -> str:
        """Where it points, without the password (for logs and errors)."""
        if self.is_sentinel:
            hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"{SENTINEL_SCHEME}://{hosts}/{self.master}/{self.db}"
        parts = urlsplit(self.url)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def current() -> RedisTarget:
    """What ``settings.REDIS_URL`` names now."""
    from django.conf import settings

    return parse(settings.REDIS_URL)


@lru_cache(maxsize=16)
def parse(url: str) -> RedisTarget:
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return RedisTarget(url=url)
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    hosts = parts.netloc.rpartition("@")[2]
    path = [segment for segment in parts.path.split("/") if segment]
    query = parse_qs(parts.query)
    problem = None
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            problem = f"{host!r} is not HOST:PORT"
            break
        sentinels.append((name, int(port)))
    if problem is None and not 1 <= len(path) <= 2:
        problem = "the path must be /MASTER_NAME or /MASTER_NAME/DB"
    elif problem is None and len(path) == 2 and not path[1].isdigit():
        problem = f"the database {path[1]!r} is not a number"
    elif problem is None and set(query) - {"sentinel_password"}:
        problem = f"unknown option {sorted(set(query) - {'sentinel_password'})[0]!r} (only sentinel_password)"
    if problem:
        raise ImproperlyConfigured(
            f"REDIS_URL: {problem}; a Sentinel set is "
            f"{SENTINEL_SCHEME}://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB][?sentinel_password=…]."
        )
    return RedisTarget(
        url=url,
        sentinels=tuple(sentinels),
        master=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        password=password,
        sentinel_password=query.get("sentinel_password", [None])[0],
    )


def from_layer_host(host: str | dict[str, Any]) -> RedisTarget:
    """The target of a channels-redis host entry (what ``layer_host`` built, or a plain address)."""
    if isinstance(host, str):
        return parse(host)
    if "address" in host:
        return parse(host["address"])
    sentinels = tuple((name, int(port)) for name, port in host["sentinels"])
    return RedisTarget(
        url="",
        sentinels=sentinels,
        master=host["master_name"],
        db=host.get("db", 0),
        password=host.get("password"),
        sentinel_password=host.get("sentinel_kwargs", {}).get("password"),
    )


def broker_target(url: str, redis_target: RedisTarget) -> RedisTarget:
    """What Celery's broker URL points at: the Sentinel set it was built from, or a plain Redis."""
    return redis_target if redis_target.is_sentinel and url == broker_url(redis_target) else parse(url)


def _sentinel_kwargs(target: RedisTarget) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
    }
    if target.sentinel_password:
        kwargs["password"] = target.sentinel_password
    return kwargs


def layer_host(target: RedisTarget, **options: Any) -> dict[str, Any]:
    """A host entry of channels-redis (both layers): ``address``, or ``sentinels`` and ``master_name``."""
    if not target.is_sentinel:
        return {"address": target.url, **options}
    host = {
        "sentinels": list(target.sentinels),
        "master_name": target.master,
        "db": target.db,
        "sentinel_kwargs": _sentinel_kwargs(target),
        **options,
    }
    if target.password:
        host["password"] = target.password
    return host


def broker_url(target: RedisTarget) -> str:
    """Celery's broker URL: kombu's ``sentinel://`` alternates, one per Sentinel."""
    if not target.is_sentinel:
        return target.url
    auth = f":{quote(target.password, safe='')}@" if target.password else ""
    return ";".join(f"sentinel://{auth}{host}:{port}/{target.db}" for host, port in target.sentinels)


def broker_transport_options(target: RedisTarget) -> dict[str, Any]:
    if not target.is_sentinel:
        return {}
    return {"master_name": target.master, "sentinel_kwargs": _sentinel_kwargs(target)}


def client(target: RedisTarget, **options: Any) -> redis.Redis:
    """A synchronous client; through Sentinel, each new connection goes to the current primary."""
    if not target.is_sentinel:
        return redis.Redis.from_url(target.url, **options)
    return _sentinel(target).master_for(target.master, db=target.db, password=target.password, **options)


@lru_cache(maxsize=16)
def _sentinel(target: RedisTarget) -> Sentinel:
    """One set of connections to the Sentinels per process (a readiness probe every few seconds
    must not open new ones each time); closing a client closes only its pool to the primary."""
    return Sentinel(list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target))


def async_client(target: RedisTarget, **options: Any) -> aioredis.Redis:
    if not target.is_sentinel:
        return aioredis.Redis.from_url(target.url, **options)
    sentinel = AsyncSentinel(list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target))
    return sentinel.master_for(target.master, db=target.db, password=target.password, **options)
