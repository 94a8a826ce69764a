"""A hypothesis fuzz pass over the SignalR hub's input (docs/SIGNALR.md): arbitrary handshakes, binary
frames, and frames of records (random JSON values, wrong types, unknown targets, wrong argument
counts and types, huge ids, several records per frame, missing separators).

Each example gets a fresh connection and is checked against the contract:
- a handshake is answered ``{}`` when it asks for ``json`` version 0 or 1, else ``{"error": …}`` and
  the socket closes;
- after the handshake every invocation with an ``invocationId`` gets exactly one Completion, in
  order, with a readable error or a result (never both);
- an invalid record (or a frame without its trailing separator) ends the connection with a Close
  message saying why; a Close record from the client closes it; otherwise the connection stays
  usable (a Ping and an invocation after it are answered);
and, over the whole pass: nothing is stored (no event, no run), nothing is logged as an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework_simplejwt.tokens import AccessToken

from campaigns.tests.factories import CampaignFactory, RunFactory, UserFactory
from eventlog.models import CampaignEvent
from marketing_agents.asgi import application
from orchestration.models import OrchestrationRun
from realtime.consumers.signalr import HUB_METHODS
from realtime.signalr.protocol import RS
from realtime.tests.sockets import stop_hub

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/hubs/campaign"
HANDSHAKE = '{"protocol":"json","version":1}' + RS
INVOCATION, STREAM_INVOCATION, CLOSE = 1, 4, 7
FUZZ = hypothesis_settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
huge_ids = st.integers(min_value=1_000, max_value=40_000).map(lambda n: "i" * n) | st.integers(
    min_value=10**18, max_value=10**40
)
method_names = sorted(method.name for method in HUB_METHODS.values())


def readable(error: Any) -> bool:
    return (
        isinstance(error, str)
        and bool(error.strip())
        and not any(word in error for word in ("Traceback", 'File "', "Exception", "Error:"))
    )


def accepted_handshake(text: str) -> str | None:
    """The contract's handshake rule: ``json`` (any case) version 0, 1 or 2, or ``messagepack`` version 1
    or 2, then the separator; returns the protocol accepted, or None."""
    first, separator, _ = text.partition(RS)
    try:
        request = json.loads(first)
    except (ValueError, RecursionError):
        return None
    if not separator or not isinstance(request, dict):
        return None
    protocol, version = request.get("protocol"), request.get("version")
    if not isinstance(protocol, str) or not isinstance(version, int) or isinstance(version, bool):
        return None
    versions = {"json": (0, 1, 2), "messagepack": (1, 2)}.get(protocol.lower(), ())
    return protocol.lower() if version in versions else None


def expected(frame: str, limit: int) -> tuple[list[str], str | None]:
    """The contract for one frame after the handshake: the invocation ids that must be answered, in
    order, and how the connection ends (None: it stays open; "close-message": a Close record saying
    why, then the close; "closed": the client's own Close record, closed without a message)."""
    if len(frame.encode()) > limit or not frame.endswith(RS):  # over the frame limit, or no separator
        return [], "close-message"
    ids: list[str] = []
    for text in frame.split(RS)[:-1]:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            return ids, "close-message"
        if not isinstance(message, dict):
            return ids, "close-message"
        kind, invocation_id = message.get("type"), message.get("invocationId")
        if not isinstance(kind, int) or isinstance(kind, bool):
            return ids, "close-message"
        if invocation_id is not None and not isinstance(invocation_id, str):
            return ids, "close-message"
        if kind in (INVOCATION, STREAM_INVOCATION):
            if not isinstance(message.get("target"), str) or not isinstance(message.get("arguments"), list):
                return ids, "close-message"
            if kind == STREAM_INVOCATION and invocation_id is None:
                return ids, "close-message"
            if invocation_id is not None:
                ids.append(invocation_id)
        elif kind in (8, 9):  # Ack and Sequence need a non-negative integer sequenceId (as ASP.NET Core's parser)
            sequence_id = message.get("sequenceId")
            if not isinstance(sequence_id, int) or isinstance(sequence_id, bool) or sequence_id < 0:
                return ids, "close-message"
        if kind == CLOSE:
            return ids, "closed"
    return ids, None


def test_fuzzed_handshakes_and_records_get_the_contracts_answers(settings, caplog):
    settings.WS_MAX_FRAMES_PER_SECOND = 1_000_000  # hypothesis sends faster than a person would
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    alices, bobs = CampaignFactory(owner=alice), CampaignFactory(owner=bob)
    bobs_run = RunFactory(campaign=bobs, state="generating")
    runs_before = OrchestrationRun.objects.count()
    token = str(AccessToken.for_user(alice))

    arguments = st.lists(
        st.sampled_from([alices.public_id, bobs.public_id, bobs_run.public_id, "camp_missing", "run_missing"])
        | json_values
        | huge_ids,
        max_size=4,
    )
    # Well-formed invocations (unknown targets, wrong argument counts and types, huge ids): answered
    # with a Completion each; then records of any shape, and text that is not JSON at all.
    invocations = st.fixed_dictionaries(
        {
            "type": st.sampled_from([1, 1, 1, 4]),
            "invocationId": st.text(min_size=1, max_size=8) | huge_ids.map(str),
            "target": st.sampled_from(method_names) | st.text(max_size=12),
            "arguments": arguments,
        },
        optional={"headers": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2)},
    ).map(json.dumps)
    other_messages = st.fixed_dictionaries(
        {"type": st.sampled_from([1, 2, 3, 5, 6, 7, 8, 9, 0, -1, 99]) | json_values},
        optional={
            "invocationId": st.text(min_size=1, max_size=8) | huge_ids | json_values,
            "target": st.sampled_from(method_names) | st.text(max_size=12) | json_values,
            "arguments": arguments | json_values,
            "streamIds": st.lists(st.text(max_size=4), max_size=2),
            "result": json_values,
            "sequenceId": st.integers(min_value=-2, max_value=10**20) | json_values,  # Ack, Sequence
        },
    ).map(json.dumps)
    records = st.one_of(
        invocations, invocations, invocations, other_messages, json_values.map(json.dumps), st.text(max_size=30)
    )
    frames = st.one_of(
        st.lists(invocations, min_size=1, max_size=4).map(lambda rs: RS.join(rs) + RS),  # several per frame
        st.lists(invocations | other_messages, min_size=1, max_size=4).map(lambda rs: RS.join(rs) + RS),
        st.tuples(st.lists(records, min_size=1, max_size=4), st.sampled_from([RS, RS, "", "\n"])).map(
            lambda parts: parts[1].join(parts[0]) + RS  # "" and "\n": missing separators between records
        ),
        st.lists(records, min_size=1, max_size=4).map(RS.join),  # no trailing separator
    )
    handshakes = (
        st.fixed_dictionaries(
            {},
            optional={
                "protocol": st.sampled_from(["json", "JSON", "messagepack", "xml", ""]) | json_values,
                "version": st.sampled_from([0, 1, 2, -1, True, "1", 1.0, 10**30]) | json_values,
            },
        ).map(json.dumps)
        | st.text(max_size=40)
    ).flatmap(lambda text: st.sampled_from([text + RS, text]))
    seen = {"completions": 0, "closes": 0, "usable": 0, "handshake_errors": 0}

    with asyncio.Runner() as runner:

        async def open_hub(*, handshake: bool = True) -> WebsocketCommunicator:
            comm = WebsocketCommunicator(application, f"{PATH}?access_token={token}")
            assert (await comm.connect(timeout=5))[0]
            if handshake:
                await comm.send_to(text_data=HANDSHAKE)
                assert await comm.receive_from(timeout=5) == "{}" + RS
            return comm

        async def read_records(comm: WebsocketCommunicator, until_id: str | None) -> tuple[list[dict], bool]:
            """Records until the Completion of ``until_id`` (not included) or the close."""
            received: list[dict[str, Any]] = []
            while True:
                output = await comm.receive_output(timeout=5)
                if output["type"] == "websocket.close":
                    return received, True
                text = output.get("text")
                assert text is not None and text.endswith(RS), output
                for part in text.split(RS)[:-1]:
                    message = json.loads(part)
                    if until_id is not None and message == {"type": 3, "invocationId": until_id}:
                        return received, False
                    received.append(message)

        async def probe(comm: WebsocketCommunicator) -> tuple[list[dict], bool]:
            probe_id = "probe-" + uuid.uuid4().hex
            invocation = {"type": 1, "invocationId": probe_id, "target": "LeaveCampaignGroup", "arguments": ["x"]}
            await comm.send_to(text_data=json.dumps({"type": 6}) + RS + json.dumps(invocation) + RS)
            return await read_records(comm, probe_id)

        async def records_exchange(frame: str) -> None:
            comm = await open_hub()
            try:
                ids, ending = expected(frame, settings.WS_MAX_FRAME_BYTES)
                await comm.send_input({"type": "websocket.receive", "text": frame})
                if ending is None:
                    received, closed = await probe(comm)
                    assert not closed, (frame, received)
                    seen["usable"] += 1
                else:
                    received, closed = await read_records(comm, None)
                    assert closed, (frame, received)
                completions = [message for message in received if message.get("type") == 3]
                assert [message["invocationId"] for message in completions] == ids, (frame, received)
                for message in completions:
                    assert not ("error" in message and "result" in message), message
                    if "error" in message:
                        assert readable(message["error"]), message
                seen["completions"] += len(completions)
                closes = [message for message in received if message.get("type") == CLOSE]
                if ending == "close-message":
                    assert received and received[-1]["type"] == CLOSE and readable(received[-1]["error"]), received
                    assert "allowReconnect" not in received[-1]
                    seen["closes"] += 1
                else:
                    assert closes == [], (frame, received)
                for message in received:  # besides those: only server-to-client calls (snapshots)
                    assert message.get("type") in (1, 3, 7), message
                    if message["type"] == 1:
                        assert "invocationId" not in message and message["target"] in (
                            "ReceiveCampaignSnapshot",
                            "OnCampaignStatusReceived",
                            "ReceiveCancellationAcknowledgement",
                            "ReceiveAccountSnapshot",
                            "ReceiveOpsSnapshot",
                        ), message
            finally:
                await comm.disconnect()

        async def handshake_exchange(text: str) -> None:
            comm = await open_hub(handshake=False)
            try:
                await comm.send_input({"type": "websocket.receive", "text": text})
                answer = await comm.receive_output(timeout=5)
                assert answer["type"] == "websocket.send" and answer["text"].endswith(RS), answer
                response = json.loads(answer["text"][:-1])
                accepted = accepted_handshake(text)
                if accepted == "json":
                    assert response == {}, (text, response)
                    received, closed = await probe(comm)
                    assert not closed and received == [], (text, received)
                elif accepted == "messagepack":  # its messages are binary (test_consumers_signalr.py)
                    assert response == {}, (text, response)
                else:
                    assert set(response) == {"error"} and readable(response["error"]), (text, response)
                    assert (await comm.receive_output(timeout=5))["type"] == "websocket.close"
                    seen["handshake_errors"] += 1
            finally:
                await comm.disconnect()

        async def binary_exchange(data: bytes, handshake_first: bool) -> None:
            comm = await open_hub(handshake=handshake_first)
            try:
                await comm.send_input({"type": "websocket.receive", "bytes": data})
                answer = await comm.receive_output(timeout=5)
                assert answer["type"] == "websocket.send" and answer["text"].endswith(RS), answer
                response = json.loads(answer["text"][:-1])
                if handshake_first:  # a binary frame after a JSON handshake: a Close message
                    assert response["type"] == CLOSE and readable(response["error"]), response
                elif accepted_handshake(data.decode("utf-8", "replace")):  # a handshake may come in a binary frame
                    assert response == {}, (data, response)
                    return
                else:  # instead of the handshake: a handshake error
                    assert set(response) == {"error"} and readable(response["error"]), response
                assert (await comm.receive_output(timeout=5))["type"] == "websocket.close"
            finally:
                await comm.disconnect()

        @hypothesis_settings(parent=FUZZ, max_examples=150)
        @given(frames)
        def fuzz_records(frame: str) -> None:
            runner.run(records_exchange(frame))

        @FUZZ
        @given(handshakes)
        def fuzz_handshakes(text: str) -> None:
            runner.run(handshake_exchange(text))

        @FUZZ
        @given(st.binary(max_size=64) | handshakes.map(str.encode), st.booleans())
        def fuzz_binary(data: bytes, handshake_first: bool) -> None:
            runner.run(binary_exchange(data, handshake_first))

        fuzz_records()
        fuzz_handshakes()
        fuzz_binary()

        async def finish() -> None:
            await stop_hub()
            await database_sync_to_async(connections.close_all)()

        runner.run(finish())

    # The pass reached every outcome it checks.
    assert seen["completions"] and seen["closes"] and seen["usable"] and seen["handshake_errors"], seen
    assert not CampaignEvent.objects.exists()
    assert OrchestrationRun.objects.count() == runs_before
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not logged, logged[:5]
