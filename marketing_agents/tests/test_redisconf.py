"""REDIS_URL: a plain Redis, or a Sentinel set, in the shape each client needs."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from marketing_agents import redisconf

SENTINELS = "redis+sentinel://:s3cr%40t@10.0.0.1:26379,10.0.0.2:26380/mymaster/2?sentinel_password=watch3r"


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
    assert host["sentinel_kwargs"]["password"] == "watch3r"
    assert redisconf.from_layer_host(host) == redisconf.RedisTarget(
        url="", sentinels=target.sentinels, master="mymaster", db=2, password="s3cr@t", sentinel_password="watch3r"
    )
    assert redisconf.broker_url(target) == (
        "sentinel://:s3cr%40t@10.0.0.1:26379/2;sentinel://:s3cr%40t@10.0.0.2:26380/2"
    )
    assert redisconf.broker_transport_options(target)["master_name"] == "mymaster"
    assert redisconf.broker_transport_options(target)["sentinel_kwargs"]["password"] == "watch3r"
    assert redisconf.broker_target(redisconf.broker_url(target), target) is target
    for secret in ("s3cr", "watch3r"):
        assert secret not in str(target) and secret not in repr(target)


def test_sentinels_get_no_password_unless_given_their_own():
    """A Sentinel without requirepass refuses AUTH: the data nodes' password is not sent to it."""
    target = redisconf.parse("redis+sentinel://:s3cr3t@h:26379/mymaster")

    assert "password" not in redisconf.layer_host(target)["sentinel_kwargs"]
    assert redisconf.layer_host(target)["password"] == "s3cr3t"


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
        ("redis+sentinel://h1:26379/mymaster?password=x", "unknown option 'password'"),
    ],
)
def test_a_malformed_sentinel_set_stops_start_up_with_the_form_to_use(url, problem):
    with pytest.raises(ImproperlyConfigured) as refused:
        redisconf.parse(url)

    assert problem in str(refused.value)
    assert "redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]" in str(refused.value)
