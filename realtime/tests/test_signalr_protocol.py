"""The SignalR JSON hub protocol and the method families on their own: no server, no database."""

from __future__ import annotations

import json

import pytest

from realtime.signalr.families import REALTIME_API, TASK012, render_frame
from realtime.signalr.protocol import RS, InvalidRecord, camel, handshake_error, invocation, parse, record


def records(text: str) -> list[dict]:
    assert text.endswith(RS)
    return [json.loads(part) for part in text.split(RS)[:-1]]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("nope", "not valid JSON."),
        ("[1]", "a record must be a JSON object."),
        ('{"type": "1"}', 'a record needs an integer "type".'),
        ('{"type": true}', 'a record needs an integer "type".'),
        ('{"type": 6, "invocationId": 7}', '"invocationId" must be a string.'),
        ('{"type": 1, "arguments": []}', 'an invocation needs a "target" string.'),
        ('{"type": 1, "target": "X"}', 'an invocation needs an "arguments" array.'),
        ('{"type": 4, "target": "X", "arguments": []}', 'a stream invocation needs an "invocationId".'),
        ("[" * 100_000 + "]" * 100_000, "records must not nest that deeply."),
    ],
)
def test_a_record_that_breaks_the_protocol_says_why(text, why):
    with pytest.raises(InvalidRecord) as refused:
        parse(text)
    assert str(refused.value) == why


def test_a_valid_record_is_parsed_as_sent():
    text = '{"type": 1, "invocationId": "3", "target": "JoinCampaignGroup", "arguments": ["camp_x"]}'
    assert parse(text) == {"type": 1, "invocationId": "3", "target": "JoinCampaignGroup", "arguments": ["camp_x"]}
    assert parse('{"type": 6}') == {"type": 6}  # a ping


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"protocol": "json", "version": 1}, None),
        ({"protocol": "JSON", "version": 0}, None),
        ({"protocol": "messagepack", "version": 1}, None),
        ({"protocol": "messagepack", "version": 2}, None),
        ({"protocol": "messagepack", "version": 3}, "version 3 of the 'messagepack' protocol"),
        ({"protocol": "json", "version": 2}, None),  # what @microsoft/signalr 8+ asks for with stateful reconnect
        ({"protocol": "json", "version": 3}, "version 3 of the 'json' protocol; it supports versions 0, 1 and 2"),
        ({"protocol": "json", "version": "1"}, '"version" must be an integer'),
        ({"protocol": "xml", "version": 1}, "The protocol 'xml' is not supported"),
        ({"version": 1}, "Invalid handshake"),
        ([], "Invalid handshake"),
    ],
)
def test_the_handshakes_accepted_and_why_others_are_refused(request_, error):
    answer = handshake_error(request_)
    if error is None:
        assert answer is None
    else:
        assert error in answer


def test_records_end_with_the_separator_and_server_calls_carry_no_invocation_id():
    assert record({"type": 6}) == '{"type":6}' + RS
    assert records(invocation("OnCampaignCompleted", "camp_x")) == [
        {"type": 1, "target": "OnCampaignCompleted", "arguments": ["camp_x"]}
    ]


def test_keys_become_camel_case_and_values_stay():
    value = {"run_id": "run_a", "steps": [{"duration_ms": 5, "error_message": "a_b"}], 3: "x"}
    assert camel(value) == {"runId": "run_a", "steps": [{"durationMs": 5, "errorMessage": "a_b"}], 3: "x"}


FRAME = {
    "type": "event",
    "event": "artifact.generated",
    "campaign_id": "camp_x",
    "run_id": "run_y",
    "sequence": 7,
    "emitted_at": "2026-11-30T10:00:00.000000Z",
    "data": {"artifact": {"id": "art_1", "type": "Copy", "agent_name": "copywriter"}},
}


def test_the_task012_family_gets_every_event_and_artifacts_twice():
    assert records(render_frame(TASK012, FRAME)) == [
        {
            "type": 1,
            "target": "ReceiveOrchestrationEvent",
            "arguments": [
                {
                    "event": "artifact.generated",
                    "campaignId": "camp_x",
                    "runId": "run_y",
                    "sequence": 7,
                    "emittedAt": "2026-11-30T10:00:00.000000Z",
                    "data": {"artifact": {"id": "art_1", "type": "Copy", "agentName": "copywriter"}},
                }
            ],
        },
        {
            "type": 1,
            "target": "ReceiveArtifactUpdate",
            "arguments": [
                {
                    "campaignId": "camp_x",
                    "runId": "run_y",
                    "sequence": 7,
                    "artifact": {"id": "art_1", "type": "Copy", "agentName": "copywriter"},
                }
            ],
        },
    ]


def test_the_realtime_api_family_gets_only_the_events_it_has_a_method_for():
    assert records(render_frame(REALTIME_API, FRAME)) == [
        {
            "type": 1,
            "target": "OnArtifactGenerated",
            "arguments": [{"id": "art_1", "type": "Copy", "agentName": "copywriter"}],
        }
    ]
    assert render_frame(REALTIME_API, {**FRAME, "event": "step.started", "data": {}}) == ""


# --- MessagePack ------------------------------------------------------------------------------------------


def test_varint_lengths_as_the_specification_lays_them_out():
    from realtime.signalr.protocol import varint

    assert varint(0) == b"\x00"
    assert varint(127) == b"\x7f"
    assert varint(128) == b"\x80\x01"
    assert varint(16384) == b"\x80\x80\x01"


def test_every_server_message_packs_as_the_specification_says():
    import msgpack

    from realtime.signalr.protocol import json_records_to_messagepack, pack

    def body(data: bytes) -> list:
        return msgpack.unpackb(data[1:], raw=False)  # (these are all under 128 bytes: a 1-byte prefix)

    assert body(pack({"type": 1, "target": "OnCampaignCompleted", "arguments": ["camp_x"]})) == [
        1,
        {},
        None,
        "OnCampaignCompleted",
        ["camp_x"],
        [],
    ]
    assert body(pack({"type": 3, "invocationId": "7"})) == [3, {}, "7", 2]
    assert body(pack({"type": 3, "invocationId": "7", "result": {"a": 1}})) == [3, {}, "7", 3, {"a": 1}]
    assert body(pack({"type": 3, "invocationId": "7", "error": "No."})) == [3, {}, "7", 1, "No."]
    assert body(pack({"type": 6})) == [6]
    assert body(pack({"type": 7, "error": "Bye.", "allowReconnect": True})) == [7, "Bye.", True]
    assert body(pack({"type": 8, "sequenceId": 12})) == [8, 12]  # Ack
    assert body(pack({"type": 9, "sequenceId": 1})) == [9, 1]  # Sequence
    surrogate = pack({"type": 1, "target": "T", "arguments": ["\ud800", 2**70]})
    assert msgpack.unpackb(surrogate[1:], raw=False, unicode_errors="surrogatepass")[4] == ["\ud800", str(2**70)]
    both = json_records_to_messagepack(record({"type": 6}) + record({"type": 3, "invocationId": "1"}))
    assert both == pack({"type": 6}) + pack({"type": 3, "invocationId": "1"})


def test_client_messages_unpack_into_the_json_protocols_shapes():
    import msgpack

    from realtime.signalr.protocol import unpack, varint

    def frame(*items: list) -> bytes:
        out = b""
        for item in items:
            data = msgpack.packb(item)
            out += varint(len(data)) + data
        return out

    assert unpack(frame([1, {}, "0", "JoinCampaignGroup", ["camp_x"]], [6])) == [
        {"type": 1, "invocationId": "0", "target": "JoinCampaignGroup", "arguments": ["camp_x"]},
        {"type": 6},
    ]
    assert unpack(frame([1, {}, None, "CancelRun", ["run_x"], []])) == [
        {"type": 1, "invocationId": None, "target": "CancelRun", "arguments": ["run_x"]}
    ]
    assert unpack(frame([7, None])) == [{"type": 7, "error": None}]
    assert unpack(frame([8, 3])) == [{"type": 8, "sequenceId": 3}]
    assert unpack(frame([9, 1], [8, 0])) == [{"type": 9, "sequenceId": 1}, {"type": 8, "sequenceId": 0}]


def test_ack_and_sequence_records_in_json():
    assert parse('{"type":8,"sequenceId":5}') == {"type": 8, "sequenceId": 5}
    assert parse('{"type":9,"sequenceId":1}') == {"type": 9, "sequenceId": 1}
    assert record({"type": 9, "sequenceId": 3}) == '{"type":9,"sequenceId":3}' + RS


@pytest.mark.parametrize(
    "text", ['{"type":8}', '{"type":8,"sequenceId":"5"}', '{"type":9,"sequenceId":-1}', '{"type":9,"sequenceId":true}']
)
def test_an_ack_or_sequence_without_a_proper_id_is_an_invalid_record(text):
    with pytest.raises(InvalidRecord, match="sequenceId"):
        parse(text)


@pytest.mark.parametrize("items", [[8], [9, "1"], [8, -2], [9, True]])
def test_an_ack_or_sequence_without_a_proper_id_is_invalid_messagepack(items):
    import msgpack

    from realtime.signalr.protocol import unpack, varint

    data = msgpack.packb(items)
    with pytest.raises(InvalidRecord, match="sequence"):
        unpack(varint(len(data)) + data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x80",  # a length prefix that never ends
        b"\xff\xff\xff\xff\xff\x01",  # over five bytes
        b"\x05\x91",  # shorter than its prefix says
        b"\x01\xc1",  # not MessagePack
        b"\x01\x01",  # not an array
        b"\x02\x91\xc0",  # an array without an integer type
        b"\x05\x94\x01\x80\x00\xa1",  # an invocation with a non-string id, cut short
        b"\x04\x91\x81\x90\x00",  # a map whose key is an array (unhashable)
        b"\x05\x92\x06\x81\x01\x00",  # a map whose key is not a string
        b"\x06\x92\x06\xd4\x05\x01",  # an extension type
    ],
)
def test_malformed_messagepack_is_an_invalid_record(data):
    from realtime.signalr.protocol import unpack

    with pytest.raises(InvalidRecord):
        unpack(data)
