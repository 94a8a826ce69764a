"""What every socket protocol shares (realtime/consumers/base.py): bad frames get a clean error and the
connection stays usable, the frame size and rate limits, the subscription cap, and a fuzz pass.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.db import connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from campaigns.tests.factories import CampaignFactory, RunFactory
from eventlog.models import CampaignEvent
from marketing_agents.asgi import application
from realtime.tests.sockets import (
    COMMANDS,
    PATH,
    assert_clean_error,
    assert_usable,
    db,
    drain,
    expect_close,
    expect_error,
    expect_silence,
    publish_progress,
    receive_events,
    recv,
    send_raw,
    stop_hub,
    subscribe,
    token_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


# --- bad frames ---------------------------------------------------------------------------------------------


BAD_TEXT_FRAMES = [
    ("not json", "bad_request"),
    ("{'type': 'ping'}", "bad_request"),
    ("", "bad_request"),
    ("[1, 2]", "bad_request"),
    ('[{"type": "ping"}]', "bad_request"),
    ("42", "bad_request"),
    ("4.2", "bad_request"),
    ('"ping"', "bad_request"),
    ("null", "bad_request"),
    ("true", "bad_request"),
    ("{}", "bad_request"),
    ('{"request_id": "x"}', "bad_request"),
    ('{"type": 5}', "bad_request"),
    ('{"type": null}', "bad_request"),
    ('{"type": ["ping"]}', "bad_request"),
    ('{"type": {"name": "ping"}}', "bad_request"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": ""}', "unknown_type"),
    ('{"type": "PING"}', "unknown_type"),
    ('{"type": "__init__"}', "unknown_type"),
    ('{"type": "subscribed"}', "unknown_type"),
    ('{"type": "' + "x" * 5000 + '"}', "unknown_type"),
    ('{"type": "subscribe"}', "bad_request"),
    ('{"type": "subscribe", "campaign_id": 5}', "bad_request"),
    ('{"type": "subscribe", "campaign_id": null}', "bad_request"),
    ('{"type": "subscribe", "campaign_id": ["camp_x"]}', "bad_request"),
    ('{"type": "ping", "request_id": 5}', "bad_request"),
    ('{"type": "ping", "request_id": {"id": "x"}}', "bad_request"),
]


async def test_bad_text_frames_get_an_error_and_the_connection_stays_usable(ws, users):
    comm = await ws(users["alice"])
    for text, code in BAD_TEXT_FRAMES:
        await send_raw(comm, text=text)
        frame = await expect_error(comm, code)
        assert len(frame["message"]) < 500, "the message echoes the frame"
        await assert_usable(comm)


@pytest.mark.parametrize("last_sequence", [-1, "5", True, False, 1.5, 2.0, [], {}])
async def test_subscribe_with_a_bad_last_sequence_is_bad_request(ws, users, last_sequence):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await comm.send_json_to(
        {"type": "subscribe", "campaign_id": campaign.public_id, "last_sequence": last_sequence, "request_id": "ls"}
    )
    await expect_error(comm, "bad_request", "ls")
    await assert_usable(comm)
    await publish_progress(campaign, 1)
    await expect_silence(comm)  # the refused subscribe did not subscribe


async def test_errors_echo_a_string_request_id(ws, users):
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "dance", "request_id": "r-unknown"})
    await expect_error(comm, "unknown_type", "r-unknown")
    await comm.send_json_to({"type": "subscribe", "request_id": "r-missing"})
    await expect_error(comm, "bad_request", "r-missing")
    await comm.send_json_to({"type": "subscribe", "campaign_id": "camp_nope", "request_id": "r-nf"})
    await expect_error(comm, "not_found", "r-nf")


async def test_binary_frames_are_bad_request(ws, users):
    comm = await ws(users["alice"])
    for data in (b'{"type": "ping"}', b"\x00\xff\xfe", b""):
        await send_raw(comm, data=data)
        await expect_error(comm, "bad_request")
        await assert_usable(comm)


async def test_deeply_nested_json_is_bad_request_not_internal_error(ws, users):
    """A frame nested deeper than the JSON decoder's recursion limit is the client's fault."""
    comm = await ws(users["alice"])
    await comm.send_to(text_data="[" * 5000 + "]" * 5000)
    await expect_error(comm, "bad_request")
    await assert_usable(comm)
    await comm.send_to(text_data='{"type": "ping", "x": ' + "[" * 3000 + "]" * 3000 + "}")
    frame = await recv(comm)
    assert frame["type"] != "error" or frame["code"] == "bad_request", frame
    await assert_usable(comm)


# --- limits -------------------------------------------------------------------------------------------------


async def test_a_frame_of_exactly_the_limit_is_accepted(ws, users):
    comm = await ws(users["alice"])
    head = '{"type": "ping", "request_id": "big", "pad": "'
    text = head + "x" * (100 * 1024 - len(head) - 2) + '"}'
    assert len(text.encode()) == 100 * 1024
    await comm.send_to(text_data=text)
    assert await recv(comm) == {"type": "pong", "request_id": "big"}


async def test_a_frame_over_100_kb_is_message_too_large_then_1009(ws, users):
    comm = await ws(users["alice"])
    await comm.send_to(text_data='{"type": "ping", "pad": "' + "x" * (100 * 1024) + '"}')
    await expect_error(comm, "message_too_large")
    await expect_close(comm, 1009)


async def test_the_frame_limit_counts_bytes_not_characters(ws, users):
    comm = await ws(users["alice"])
    await comm.send_to(text_data='{"type": "ping", "pad": "' + "é" * 60 * 1024 + '"}')  # 60 K chars, 120 KB
    await expect_error(comm, "message_too_large")
    await expect_close(comm, 1009)


async def test_more_than_100_frames_a_second_is_rate_limited_once(ws, users, clock):
    comm = await ws(users["alice"])
    clock.advance(1.05)  # the next frame opens a fresh one-second window
    for i in range(110):
        await comm.send_json_to({"type": "ping", "request_id": f"p{i}"})
    for i in range(100):
        assert await recv(comm) == {"type": "pong", "request_id": f"p{i}"}
    await expect_error(comm, "rate_limited")
    await expect_silence(comm)  # the ten extra frames are not answered, and the error comes once
    clock.advance(1.05)
    await assert_usable(comm)


async def test_keeping_up_the_flood_closes_with_1008(ws, users, clock):
    comm = await ws(users["alice"])
    clock.advance(1.05)
    for i in range(400):
        await comm.send_json_to({"type": "ping", "request_id": f"p{i}"})
    for i in range(100):
        assert await recv(comm) == {"type": "pong", "request_id": f"p{i}"}
    await expect_error(comm, "rate_limited")
    await expect_close(comm, 1008)
    # Nothing but (repeated) close messages after that: no frame is answered any more.
    assert all(output["type"] == "websocket.close" for output in await drain(comm, 0.3))


async def test_bursts_separated_by_quiet_seconds_are_not_closed(ws, users, clock):
    """Only a flood that goes on (three seconds in a row) closes the connection; a burst now and then
    gets rate_limited each time, and the connection stays open."""
    comm = await ws(users["alice"])
    for burst in range(3):
        clock.advance(2.2)  # at least one whole quiet second between the bursts
        for i in range(105):
            await comm.send_json_to({"type": "ping", "request_id": f"b{burst}-{i}"})
        for i in range(100):
            frame = await recv(comm)
            assert frame == {"type": "pong", "request_id": f"b{burst}-{i}"}, (burst, frame)
        await expect_error(comm, "rate_limited")
        await expect_silence(comm, 0.2)
    clock.advance(1.05)
    await assert_usable(comm)


async def test_the_eleventh_subscription_is_too_many(ws, users):
    campaigns = [await db(CampaignFactory)(owner=users["alice"]) for _ in range(11)]
    comm = await ws(users["alice"])
    for campaign in campaigns[:10]:
        await subscribe(comm, campaign)
    await comm.send_json_to({"type": "subscribe", "campaign_id": campaigns[10].public_id, "request_id": "11"})
    await expect_error(comm, "too_many_subscriptions", "11")
    await subscribe(comm, campaigns[3])  # re-subscribing one already held is not an extra subscription
    await publish_progress(campaigns[10], 1)
    await expect_silence(comm)
    # Unsubscribing frees a place.
    await comm.send_json_to({"type": "unsubscribe", "campaign_id": campaigns[0].public_id})
    assert (await recv(comm))["type"] == "unsubscribed"
    await subscribe(comm, campaigns[10])
    await publish_progress(campaigns[10], 2)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [2]


async def test_the_subscription_limit_follows_the_setting(ws, users, settings):
    settings.WS_MAX_SUBSCRIPTIONS = 2
    campaigns = [await db(CampaignFactory)(owner=users["alice"]) for _ in range(3)]
    comm = await ws(users["alice"])
    await subscribe(comm, campaigns[0])
    await subscribe(comm, campaigns[1])
    await comm.send_json_to({"type": "subscribe", "campaign_id": campaigns[2].public_id})
    frame = await expect_error(comm, "too_many_subscriptions")
    assert "2" in frame["message"]
    await assert_usable(comm)


# --- fuzzing ------------------------------------------------------------------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def check_answer(frame: Any) -> None:
    assert isinstance(frame, dict), frame
    assert isinstance(frame.get("type"), str), frame
    if frame["type"] == "error":
        assert_clean_error(frame)
        assert frame["code"] != "internal_error", frame


def test_fuzzed_frames_never_break_the_connection(users, settings, caplog):
    """Random frames from bob: answers are well-formed, alice, subscribed to her campaign, sees nothing,
    and nothing is logged as an error (a client's mistake is never a traceback)."""
    settings.WS_MAX_FRAMES_PER_SECOND = 1_000_000  # hypothesis sends faster than a person would
    alices = CampaignFactory(owner=users["alice"])
    alices_run = RunFactory(campaign=alices, state="generating")
    bobs = CampaignFactory(owner=users["bob"])
    bobs_run = RunFactory(campaign=bobs, state="generating")
    known_ids = [alices.public_id, bobs.public_id, alices_run.public_id, bobs_run.public_id, "camp_missing"]
    ids = st.sampled_from(known_ids) | json_values
    command_frames = st.fixed_dictionaries(
        {"type": st.sampled_from(COMMANDS)},
        optional={
            "campaign_id": ids,
            "run_id": ids,
            "last_sequence": st.integers(min_value=-3, max_value=10**20) | json_values,
            "request_id": st.text(max_size=20) | json_values,
            "extra": json_values,
        },
    )
    fuzz = hypothesis_settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))

    with asyncio.Runner() as runner:

        async def connect(user) -> WebsocketCommunicator:
            comm = WebsocketCommunicator(application, f"{PATH}?access_token={token_for(user)}")
            assert (await comm.connect(timeout=5))[0]
            return comm

        async def setup() -> tuple[WebsocketCommunicator, WebsocketCommunicator]:
            watcher, fuzzer = await connect(users["alice"]), await connect(users["bob"])
            await subscribe(watcher, alices)
            return watcher, fuzzer

        watcher, fuzzer = runner.run(setup())
        answers: list[dict[str, Any]] = []

        async def exchange(text: str | None = None, data: bytes | None = None) -> None:
            await send_raw(fuzzer, text=text, data=data)
            marker = "fuzz-" + uuid.uuid4().hex
            await fuzzer.send_json_to({"type": "ping", "request_id": marker})
            while True:
                frame = json.loads(await fuzzer.receive_from(timeout=5))
                check_answer(frame)
                answers.append(frame)
                if frame == {"type": "pong", "request_id": marker}:
                    return

        @fuzz
        @given(st.text())
        def random_text(text: str) -> None:
            runner.run(exchange(text=text))

        @fuzz
        @given(st.binary())
        def random_bytes(data: bytes) -> None:
            runner.run(exchange(data=data))

        @fuzz
        @given(json_values)
        def random_json(value: Any) -> None:
            runner.run(exchange(text=json.dumps(value)))

        @fuzz
        @given(command_frames)
        def random_commands(frame: dict[str, Any]) -> None:
            runner.run(exchange(text=json.dumps(frame)))

        random_text()
        random_bytes()
        random_json()
        random_commands()

        async def finish() -> None:
            await assert_usable(fuzzer)
            while not await fuzzer.receive_nothing(timeout=0.3):
                check_answer(json.loads(await fuzzer.receive_from()))
            await expect_silence(watcher, 0.5)  # nothing the fuzzer did reached alice's campaign
            await fuzzer.disconnect()
            await watcher.disconnect()
            await stop_hub()
            await db(connections.close_all)()

        runner.run(finish())

    assert any(a["type"] == "error" for a in answers)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    for answer in answers:
        if answer.get("campaign_id") is not None:
            assert answer["campaign_id"] != alices.public_id, answer
        if answer["type"] == "cancellation_ack":
            assert answer["run_id"] == bobs_run.public_id
    alices_run.refresh_from_db()
    assert alices_run.state == "generating"
    assert not CampaignEvent.objects.filter(campaign=alices).exists()
