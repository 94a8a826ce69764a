from __future__ import annotations

import logging

from marketing_agents.logging import RedactSecretsFilter, redact


def test_tokens_and_passwords_are_redacted():
    line = (
        "GET /ws/campaigns/?access_token=eyJhbGciOi.abc.def&x=1 Authorization: Bearer eyJzecret "
        "redis://user:pa55word@127.0.0.1:6379/0 Authorization: Api-Key AbCd1234.k3ysecret"
    )
    cleaned = redact(line)
    for secret in ("eyJhbGciOi.abc.def", "eyJzecret", "pa55word", "k3ysecret"):
        assert secret not in cleaned
    assert "access_token=[redacted]" in cleaned
    assert "x=1" in cleaned


def test_filter_rewrites_the_record(caplog):
    logger = logging.getLogger("test.redact")
    logger.addFilter(RedactSecretsFilter())
    try:
        with caplog.at_level(logging.INFO, logger="test.redact"):
            logger.info("connect %s", "/ws/campaigns/?access_token=s3cr3t")
    finally:
        logger.filters.clear()
    assert "s3cr3t" not in caplog.text
    assert "access_token=[redacted]" in caplog.text


def test_an_unreachable_redis_in_channels_redis_is_one_warning_line_without_a_traceback():
    import logging

    from redis.exceptions import ConnectionError as RedisConnectionError

    from marketing_agents.logging import OutageFilter

    try:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    except RedisConnectionError:
        import sys

        record = logging.LogRecord(
            "channels_redis.pubsub",
            logging.ERROR,
            __file__,
            1,
            "Unexpected exception in receive task",
            None,
            sys.exc_info(),
        )
    assert OutageFilter().filter(record)
    assert record.levelname == "WARNING" and record.exc_info is None
    assert record.getMessage() == "channel layer: Redis unreachable (ConnectionError); retrying"
    assert "Traceback" not in logging.Formatter().format(record)
