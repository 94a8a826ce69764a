"""The SignalR hub consumer (realtime/consumers/signalr.py) over the real ASGI app: the handshake, records,
invocations and their completions, closing, and a client that goes while its answer is on the way.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time

import pytest

from campaigns.tests.factories import CampaignFactory
from eventlog.publisher import publish
from realtime.signalr.protocol import RS
from realtime.tests.hubs import (
    HANDSHAKE,
    PATH,
    assert_readable,
    db,
    invoke,
    rec,
    token_for,
    ws_frame,
)

pytestmark = pytest.mark.django_db(transaction=True)


# --- connect and handshake ------------------------------------------------------------------------------------


async def test_handshake_answers_an_empty_object(hub, users):
    connection = await hub(users["alice"], handshake=False)
    await connection.send(HANDSHAKE)
    output = await connection.comm.receive_output(5)
    assert output["text"] == "{}" + RS


async def test_handshake_followed_by_a_ping_in_the_same_frame(hub, users):
    connection = await hub(users["alice"], handshake=False)
    await connection.send(HANDSHAKE + rec({"type": 6}))
    assert await connection.next() == {}
    assert await connection.quiet()


@pytest.mark.parametrize(
    ("request_text", "error"),
    [
        (
            '{"protocol":"messagepack","version":3}',
            "The server does not support version 3 of the 'messagepack' protocol; it supports versions 1 and 2.",
        ),
        (
            '{"protocol":"xml","version":1}',
            "The protocol 'xml' is not supported; this server speaks 'json' (versions 0, 1 and 2) and "
            "'messagepack' (versions 1 and 2).",
        ),
        (
            '{"protocol":"json","version":3}',
            "The server does not support version 3 of the 'json' protocol; it supports versions 0, 1 and 2.",
        ),
        (
            '{"protocol":"json","version":-1}',
            "The server does not support version -1 of the 'json' protocol; it supports versions 0, 1 and 2.",
        ),
        (
            '{"protocol":"json","version":"1"}',
            'Invalid handshake: "version" must be an integer, as in {"protocol":"json","version":1}.',
        ),
        (
            '{"protocol":"json"}',
            'Invalid handshake: "version" must be an integer, as in {"protocol":"json","version":1}.',
        ),
        ("not json", 'Invalid handshake: expected {"protocol":"json","version":1}.'),
    ],
)
async def test_another_protocol_gets_a_handshake_error_and_close(hub, users, request_text, error):
    connection = await hub(users["alice"], handshake=False)
    await connection.send(request_text + RS)
    answer = await connection.next()
    assert answer == {"error": error}
    assert (await connection.next())["type"] == "websocket.close"


async def test_a_handshake_without_the_separator_gets_a_handshake_error(hub, users):
    connection = await hub(users["alice"], handshake=False)
    await connection.send('{"protocol":"json","version":1}')
    answer = await connection.next()
    assert answer == {"error": "Invalid handshake: it must end with the record separator (0x1E)."}
    assert (await connection.next())["type"] == "websocket.close"


@pytest.mark.parametrize("version", [0, 1])
async def test_every_json_version_up_to_the_servers_is_accepted(hub, users, version):
    """signalrcore sends the negotiate answer's version (0 when it named none) in its handshake."""
    campaign = await db(CampaignFactory)(owner=users["alice"])
    connection = await hub(users["alice"], handshake=False)
    await connection.send(json.dumps({"protocol": "json", "version": version}) + RS)
    assert await connection.next() == {}
    assert await connection.call("JoinCampaignGroup", campaign.public_id) == {"type": 3, "invocationId": "1"}


async def test_messagepack_from_the_handshake_binary_both_ways(hub, users):
    """The handshake (JSON) in a binary frame with a first message after it; then MessagePack only."""
    import msgpack

    from realtime.signalr.protocol import varint

    def mp(*items: list) -> bytes:
        return b"".join(varint(len(d)) + d for d in (msgpack.packb(i) for i in items))

    campaign = await db(CampaignFactory)(owner=users["alice"])
    connection = await hub(users["alice"], handshake=False)
    handshake = b'{"protocol":"messagepack","version":2}\x1e'
    await connection.comm.send_input(
        {
            "type": "websocket.receive",
            "bytes": handshake + mp([1, {}, "1", "GetCampaignSnapshot", [campaign.public_id]]),
        }
    )
    assert (await connection.comm.receive_output(5))["text"] == "{}\x1e"
    answers = []
    while not any(m[0] == 3 for m in answers):
        output = await connection.comm.receive_output(5)
        assert "bytes" in output and output.get("text") is None, output
        answers += unpack_all(output["bytes"])
    completion = next(m for m in answers if m[0] == 3)
    assert completion[2] == "1" and completion[3] == 3 and completion[4]["campaignId"] == campaign.public_id
    await connection.comm.send_input({"type": "websocket.receive", "text": rec({"type": 6})})
    close = unpack_all((await connection.comm.receive_output(5))["bytes"])[0]
    assert close[0] == 7 and "Text frames carry JSON" in close[1]


def unpack_all(data: bytes) -> list[list]:
    """A binary frame's MessagePack messages, as raw arrays (the client's view)."""
    import msgpack

    out, offset = [], 0
    while offset < len(data):
        length, shift = 0, 0
        while True:
            byte = data[offset]
            offset += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out.append(msgpack.unpackb(data[offset : offset + length], raw=False))
        offset += length
    return out


# --- messages ---------------------------------------------------------------------------------------------------


async def test_two_invocations_in_one_frame_get_two_completions(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    connection = await hub(users["alice"])
    await connection.send(
        invoke("JoinCampaignGroup", campaign.public_id, invocation_id="a")
        + invoke("LeaveCampaignGroup", campaign.public_id, invocation_id="b")
    )
    assert await connection.next() == {"type": 3, "invocationId": "a"}
    assert await connection.next() == {"type": 3, "invocationId": "b"}


async def test_the_rate_limit_counts_records_not_frames(hub, users, settings, clock):
    settings.WS_MAX_FRAMES_PER_SECOND = 5
    connection = await hub(users["alice"])
    await connection.send("".join(invoke("JoinCampaignGroup", "camp_missing", invocation_id=str(i)) for i in range(8)))
    answers = [await connection.next() for _ in range(8)]
    assert [a["invocationId"] for a in answers] == [str(i) for i in range(8)]
    assert [a["error"] for a in answers[5:]] == ["Too many frames; slow down."] * 3
    assert all(a["error"] != "Too many frames; slow down." for a in answers[:5])


async def test_an_invocation_without_id_gets_no_answer(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    connection = await hub(users["alice"])
    await connection.send(invoke("JoinCampaignGroup", campaign.public_id) + invoke("NoSuchMethod"))
    assert await connection.quiet()
    await db(publish)(campaign, "campaign.started", {"run_id": "run_x", "plan": []})
    assert (await connection.next())["target"] == "OnCampaignStarted"  # the send did subscribe


async def test_method_names_are_case_insensitive(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    connection = await hub(users["alice"])
    assert await connection.call("joincampaigngroup", campaign.public_id) == {"type": 3, "invocationId": "1"}


async def test_unknown_method_is_a_readable_completion_error(hub, users):
    connection = await hub(users["alice"])
    answer = await connection.call("DropAllTables")
    assert set(answer) == {"type", "invocationId", "error"}
    assert_readable(answer["error"])
    assert "DropAllTables" in answer["error"]
    assert await connection.call("Ping") is not None  # still usable


@pytest.mark.parametrize("arguments", [[], ["a", "b"], [42], [None], [{"campaignId": "x"}], ["a", 1, 2]])
async def test_bad_arguments_are_a_readable_completion_error(hub, users, arguments):
    connection = await hub(users["alice"])
    answer = await connection.call("JoinCampaignGroup", *arguments)
    assert_readable(answer["error"])
    assert "JoinCampaignGroup" in answer["error"]


@pytest.mark.parametrize(
    ("target", "arguments", "error"),
    [
        ("JoinCampaignGroup", [], "JoinCampaignGroup takes 1 or 2 arguments; got 0."),
        ("SubscribeToCampaign", ["camp_a", 1, 2], "SubscribeToCampaign takes 1 or 2 arguments; got 3."),
        ("GetCampaignSnapshot", ["camp_a", 1], "GetCampaignSnapshot takes 1 argument; got 2."),
        ("CancelRun", [], "CancelRun takes 1 argument; got 0."),
        ("JoinCampaignGroup", [42], "The campaignId argument of JoinCampaignGroup must be a string."),
        ("CancelRun", [None], "The runId argument of CancelRun must be a string."),
    ],
)
async def test_argument_count_and_type_errors_say_what_the_method_takes(hub, users, target, arguments, error):
    connection = await hub(users["alice"])
    assert (await connection.call(target, *arguments))["error"] == error


@pytest.mark.parametrize(
    "method", ["JoinCampaignGroup", "SubscribeToCampaign", "GetCampaignSnapshot", "RequestCampaignStatus"]
)
async def test_another_users_campaign_is_not_found_like_a_missing_one(hub, users, method):
    bobs = await db(CampaignFactory)(owner=users["bob"])
    connection = await hub(users["alice"])
    foreign = await connection.call(method, bobs.public_id, invocation_id="f")
    missing = await connection.call(method, "camp_doesnotexist", invocation_id="m")
    assert foreign["error"] == missing["error"] == "Campaign not found."
    assert "result" not in foreign


async def test_stream_invocation_is_a_completion_error(hub, users):
    connection = await hub(users["alice"])
    await connection.send(rec({"type": 4, "invocationId": "s", "target": "Anything", "arguments": []}))
    answer = await connection.next()
    assert answer["type"] == 3 and answer["invocationId"] == "s"
    assert_readable(answer["error"])
    assert "result" not in answer


async def test_cancel_invocation_stream_item_completion_and_ping_are_ignored(hub, users):
    connection = await hub(users["alice"])
    await connection.send(
        rec({"type": 5, "invocationId": "x"})
        + rec({"type": 2, "invocationId": "x", "item": 1})
        + rec({"type": 3, "invocationId": "x", "result": 1})
        + rec({"type": 6})
    )
    assert await connection.quiet()
    assert (await connection.call("JoinCampaignGroup", "camp_nope"))["error"] == "Campaign not found."


async def test_close_message_from_the_client_closes(hub, users):
    connection = await hub(users["alice"])
    await connection.send(rec({"type": 7}))
    assert (await connection.next())["type"] == "websocket.close"


async def test_server_pings_when_idle(hub, users, settings):
    settings.WS_PING_INTERVAL_SECONDS = 1
    connection = await hub(users["alice"])
    assert await connection.next(timeout=3) == {"type": 6}


@pytest.mark.parametrize(
    "bad",
    [
        "not json" + RS,
        "[1,2]" + RS,
        '{"target":"JoinCampaignGroup"}' + RS,
        '{"type":"1","target":"x","arguments":[]}' + RS,
        '{"type":1,"arguments":[]}' + RS,
        '{"type":1,"target":"x","arguments":"camp_a"}' + RS,
        '{"type":1,"invocationId":7,"target":"x","arguments":[]}' + RS,
        '{"type":6}',  # no record separator
    ],
)
async def test_an_invalid_record_closes_only_that_connection(hub, users, bad):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    broken = await hub(users["alice"])
    other = await hub(users["alice"])
    await broken.send(bad)
    close = await broken.next()
    assert close["type"] == 7
    assert_readable(close["error"])
    assert (await broken.next())["type"] == "websocket.close"
    assert await other.call("JoinCampaignGroup", campaign.public_id) == {"type": 3, "invocationId": "1"}


async def test_binary_frames_close_a_json_connection(hub, users):
    connection = await hub(users["alice"])
    await connection.comm.send_input({"type": "websocket.receive", "bytes": b"\x01"})
    close = await connection.next()
    assert close["type"] == 7 and "this connection chose the JSON protocol" in close["error"]


async def test_a_frame_over_the_limit_is_closed_with_a_reason(hub, users):
    connection = await hub(users["alice"])
    await connection.send(invoke("JoinCampaignGroup", "x" * 200_000, invocation_id="big"))
    close = await connection.next()
    assert close["type"] == 7 and "KB" in close["error"]


# --- a client that goes while its answer is on the way (real daphne) ----------------------------------------


def raw_hub_socket(server, token: str) -> socket.socket:
    """A WebSocket to the hub over a plain socket, so the test decides what goes in each TCP write."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {PATH}?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, response
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    head, _, rest = response.partition(b"\r\n\r\n")
    sock.sendall(ws_frame(0x1, HANDSHAKE.encode()))
    while RS.encode() not in rest:  # the handshake answer, {}\x1e
        chunk = sock.recv(4096)
        assert chunk, rest
        rest += chunk
    return sock


def test_an_answer_for_a_client_that_closed_is_dropped_without_a_traceback(start_web, users):
    """The client sends an invocation and its close frame in one TCP write: autobahn reads both before
    the hub runs, so the Completion meets a protocol that is closing but not yet disconnected (daphne
    still passes sends on): "Attempt to send on a closed protocol" was raised from the hub's write."""
    server = start_web()
    token = token_for(users["alice"])
    rounds = 15
    for round_ in range(rounds):
        sock = raw_hub_socket(server, token)
        try:
            invocation = invoke("NoSuchMethod", invocation_id=str(round_)).encode()
            sock.sendall(ws_frame(0x1, invocation) + ws_frame(0x8, (1000).to_bytes(2, "big")))
            while sock.recv(4096):  # until the server drops the TCP connection
                pass
        finally:
            sock.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log = server.log()
        if "Traceback" in log or log.count("client gone, output dropped") >= rounds:
            break
        time.sleep(0.05)  # polling the log file for the condition above, bounded by the deadline
    log = server.log()
    assert "Traceback" not in log and "closed protocol" not in log, log[-4000:]
    assert log.count("client gone, output dropped") >= rounds, log[-4000:]
    # The server still answers.
    sock = raw_hub_socket(server, token)
    sock.close()


async def test_a_json_handshake_in_a_binary_frame_is_accepted_then_records_are_text(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    connection = await hub(users["alice"], handshake=False)
    await connection.comm.send_input({"type": "websocket.receive", "bytes": HANDSHAKE.encode()})
    assert await connection.next() == {}
    assert await connection.call("JoinCampaignGroup", campaign.public_id) == {"type": 3, "invocationId": "1"}
