"""REDIS_URL: a plain Redis, or a Sentinel set, in the shape each client needs."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from marketing_agents import redisconf

SENTINELS = "redis+sentinel://:s3cr%40t@10.0.0.1:26379,10.0.0.2:26380/mymaster/2"


def test_a_plain_url_is_used_as_it_is():
    target = redisconf.parse("redis://:pw@cache:6379/0")

    assert not target.is_sentinel
    assert redisconf.layer_host(target, socket_timeout=15) == {
        "address": "redis://:pw@cache:6379/0",
        "socket_timeout": 15,
    }
    assert redisconf.broker_url(target) == "redis://:pw@cache:6379/0"
    assert redisconf.broker_transport_options(target) == {}
    assert str(target) == "redis://cache:6379/0"


def test_a_sentinel_set_becomes_each_clients_shape():
    target = redisconf.parse(SENTINELS)

    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (target.master, target.db, target.password) == ("mymaster", 2, "s3cr@t")
    host = redisconf.layer_host(target, socket_timeout=15)
    assert host["sentinels"] == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert (host["master_name"], host["db"], host["password"], host["socket_timeout"]) == ("mymaster", 2, "s3cr@t", 15)
    assert host["sentinel_kwargs"]["password"] == "s3cr@t"
    assert redisconf.from_layer_host(host) == redisconf.RedisTarget(
        url="", sentinels=target.sentinels, master="mymaster", db=2, password="s3cr@t"
    )
    assert redisconf.broker_url(target) == (
        "sentinel://:s3cr%40t@10.0.0.1:26379/2;sentinel://:s3cr%40t@10.0.0.2:26380/2"
    )
    assert redisconf.broker_transport_options(target)["master_name"] == "mymaster"
    assert redisconf.broker_target(redisconf.broker_url(target), target) is target
    assert "s3cr" not in str(target) and "s3cr" not in repr(target)


def test_the_database_defaults_to_0():
    assert redisconf.parse("redis+sentinel://h:26379/mymaster").db == 0


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://h1:26379", "the path must be /MASTER_NAME"),
        ("redis+sentinel://h1/mymaster", "'h1' is not HOST:PORT"),
        ("redis+sentinel://h1:0/mymaster", "'h1:0' is not HOST:PORT"),
        ("redis+sentinel://h1:26379,/mymaster", "'' is not HOST:PORT"),
        ("redis+sentinel://h1:26379/mymaster/zero", "the database 'zero' is not a number"),
        ("redis+sentinel://h1:26379/a/1/extra", "the path must be /MASTER_NAME"),
    ],
)
def test_a_malformed_sentinel_set_stops_start_up_with_the_form_to_use(url, problem):
    with pytest.raises(ImproperlyConfigured) as refused:
        redisconf.parse(url)

    assert problem in str(refused.value)
    assert "redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]" in str(refused.value)
