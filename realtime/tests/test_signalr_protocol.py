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
    ("request_", "binary", "error"),
    [
        ({"protocol": "json", "version": 1}, False, None),
        ({"protocol": "JSON", "version": 0}, False, None),
        ({"protocol": "json", "version": 2}, False, "version 2 of the 'json' protocol"),
        ({"protocol": "json", "version": "1"}, False, '"version" must be an integer'),
        ({"protocol": "messagepack", "version": 1}, True, "MessagePack protocol is not supported yet"),
        ({"protocol": "json", "version": 1}, True, "Send the handshake as a text frame"),
        ({"protocol": "xml", "version": 1}, False, "The protocol 'xml' is not supported"),
        ({"version": 1}, False, "Invalid handshake"),
        ([], False, "Invalid handshake"),
    ],
)
def test_the_handshakes_accepted_and_why_others_are_refused(request_, binary, error):
    answer = handshake_error(request_, binary=binary)
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
