"""The SignalR-compatible hub (docs/SIGNALR.md) through the ASGI application: negotiate, handshake,
records, every message type, both method families. The real npm client: test_signalr_client.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client
from rest_framework_simplejwt.tokens import AccessToken

from campaigns.tests.factories import ArtifactFactory, CampaignFactory, RunFactory, UserFactory
from eventlog.models import CampaignEvent
from eventlog.publisher import publish, publish_transient
from marketing_agents.asgi import application
from orchestration.payloads import artifact_payload
from realtime.fanout import get_fanout
from realtime.signalr import http as signalr
from realtime.signalr.http import check_connection_token, connection_token
from realtime.signalr.protocol import RS, camel

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async
PATH = "/hubs/campaign"
NEGOTIATE = "/hubs/campaign/negotiate"
HANDSHAKE = '{"protocol":"json","version":1}' + RS


def token_for(user) -> str:
    return str(AccessToken.for_user(user))


def rec(message: dict[str, Any]) -> str:
    return json.dumps(message) + RS


def invoke(target: str, *arguments: Any, invocation_id: str | None = None) -> str:
    message: dict[str, Any] = {"type": 1, "target": target, "arguments": list(arguments)}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    return rec(message)


class Hub:
    """A hub connection seen from the client: raw frames in, records out."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm
        self.pending: list[Any] = []

    async def send(self, text: str) -> None:
        await self.comm.send_input({"type": "websocket.receive", "text": text})

    async def next(self, timeout: float = 5) -> Any:
        """The next record (a dict), or the websocket.close output."""
        while not self.pending:
            output = await self.comm.receive_output(timeout)
            if output["type"] == "websocket.close":
                return output
            assert output["text"].endswith(RS), output
            self.pending = [json.loads(part) for part in output["text"].split(RS)[:-1]]
        return self.pending.pop(0)

    async def call(self, target: str, *arguments: Any, invocation_id: str = "1") -> dict[str, Any]:
        """Invoke and return the Completion (client-method calls arriving before it are kept in ``calls``)."""
        await self.send(invoke(target, *arguments, invocation_id=invocation_id))
        self.calls: list[dict[str, Any]] = []
        while True:
            message = await self.next()
            if message.get("type") == 3 and message.get("invocationId") == invocation_id:
                return message
            self.calls.append(message)

    async def until(self, target: str, timeout: float = 5) -> list[dict[str, Any]]:
        """Records up to and including the first call of ``target``."""
        seen = []
        while True:
            message = await self.next(timeout)
            assert message.get("type") != "websocket.close", (target, seen)
            if message.get("type") == 6:
                continue
            seen.append(message)
            if message.get("type") == 1 and message["target"] == target:
                return seen

    async def quiet(self, timeout: float = 0.4) -> bool:
        return not self.pending and await self.comm.receive_nothing(timeout=timeout, interval=0.02)


@pytest.fixture
async def hub(transactional_db):
    opened: list[WebsocketCommunicator] = []

    async def open_hub(user=None, *, path: str | None = None, handshake: bool = True) -> Hub:
        if path is None:
            path = f"{PATH}?id={connection_token(signalr.new_connection_id())}"
            if user is not None:
                path += f"&access_token={token_for(user)}"
        comm = WebsocketCommunicator(application, path)
        opened.append(comm)
        connected, _ = await comm.connect(timeout=5)
        assert connected, "the WebSocket was refused"
        connection = Hub(comm)
        if handshake:
            await connection.send(HANDSHAKE)
            assert await connection.next() == {}
        return connection

    yield open_hub

    for comm in opened:
        try:
            await comm.disconnect(timeout=2)
        except (Exception, asyncio.CancelledError):  # finished already (closed, or cancelled by the test)
            pass
    hub_instance = get_fanout()
    for _ in range(200):
        pending = [task for task in hub_instance._tasks if not task.done()]
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.05)
    await db(connections.close_all)()


@pytest.fixture
def users(transactional_db):
    return {"alice": UserFactory(username="alice"), "bob": UserFactory(username="bob")}


def assert_readable(error: str) -> None:
    assert isinstance(error, str) and error.strip()
    assert "Traceback" not in error and "File " not in error and "Exception" not in error


# --- negotiate ---------------------------------------------------------------------------------------------


def test_negotiate_version_1(users):
    response = Client().post(
        f"{NEGOTIATE}?negotiateVersion=1", HTTP_AUTHORIZATION=f"Bearer {token_for(users['alice'])}"
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"negotiateVersion", "connectionId", "connectionToken", "availableTransports"}
    assert body["negotiateVersion"] == 1
    assert body["availableTransports"] == [{"transport": "WebSockets", "transferFormats": ["Text"]}]
    for value in (body["connectionId"], body["connectionToken"]):
        assert all(c.isalnum() or c in "-_." for c in value), value
    assert check_connection_token(body["connectionToken"]) == body["connectionId"]
    assert "ProtocolVersion" not in body and "useStatefulReconnect" not in body


def test_negotiate_version_0_has_no_connection_token(users):
    response = Client().post(NEGOTIATE, HTTP_AUTHORIZATION=f"Bearer {token_for(users['alice'])}")
    body = response.json()
    assert response.status_code == 200
    # negotiateVersion is always written (ASP.NET Core does; signalrcore refuses an answer without it)
    assert set(body) == {"negotiateVersion", "connectionId", "availableTransports"}
    assert body["negotiateVersion"] == 0
    assert check_connection_token(body["connectionId"]) is not None  # the id is what goes in ?id=


@pytest.mark.parametrize(
    ("query", "answered"),
    [("negotiateVersion=0", 0), ("negotiateVersion=2", 1), ("NegotiateVersion=1", 1), ("negotiateVersion=99", 1)],
)
def test_negotiate_answers_the_lower_of_the_clients_version_and_1(users, query, answered):
    response = Client().post(f"{NEGOTIATE}?{query}", HTTP_AUTHORIZATION=f"Bearer {token_for(users['alice'])}")
    body = response.json()
    assert response.status_code == 200 and body["negotiateVersion"] == answered
    assert ("connectionToken" in body) is (answered == 1)
    token = body["connectionToken"] if answered else body["connectionId"]
    assert check_connection_token(token) is not None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("one", "The client requested a non-integer protocol version."),
        ("-1", "The client requested version '-1', but the server does not support this version."),
    ],
)
def test_negotiate_refuses_a_version_it_cannot_read(users, value, error):
    response = Client().post(
        f"{NEGOTIATE}?negotiateVersion={value}", HTTP_AUTHORIZATION=f"Bearer {token_for(users['alice'])}"
    )
    assert response.status_code == 400 and response.json() == {"error": error}


def test_negotiate_with_the_session(users):
    client = Client()
    client.force_login(users["alice"])
    assert client.post(f"{NEGOTIATE}?negotiateVersion=1").status_code == 200


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token"])
def test_negotiate_without_authentication_is_401(users, authorization):
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = Client().post(f"{NEGOTIATE}?negotiateVersion=1", **extra)
    assert response.status_code == 401
    assert_readable(response.json()["error"])


def test_negotiate_needs_post(users):
    client = Client()
    client.force_login(users["alice"])
    assert client.get(NEGOTIATE).status_code == 405


def test_negotiate_is_csrf_exempt(users):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["alice"])
    assert client.post(f"{NEGOTIATE}?negotiateVersion=1").status_code == 200


def test_cors_preflight_allows_the_signalr_headers(users, settings):
    settings.CORS_ALLOWED_ORIGINS = ["http://app.example"]
    response = Client().options(
        f"{NEGOTIATE}?negotiateVersion=1",
        HTTP_ORIGIN="http://app.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,x-requested-with,x-signalr-user-agent",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "http://app.example"
    assert response["Access-Control-Allow-Credentials"] == "true"
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "x-requested-with", "x-signalr-user-agent"} <= allowed
    post = Client().post(
        f"{NEGOTIATE}?negotiateVersion=1",
        HTTP_ORIGIN="http://app.example",
        HTTP_AUTHORIZATION=f"Bearer {token_for(users['alice'])}",
    )
    assert post["Access-Control-Allow-Origin"] == "http://app.example"


def test_cors_preflight_from_a_foreign_origin_is_not_allowed(settings):
    settings.CORS_ALLOWED_ORIGINS = ["http://app.example"]
    response = Client().options(NEGOTIATE, HTTP_ORIGIN="http://evil.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert "Access-Control-Allow-Origin" not in response


def test_connection_tokens_expire_and_are_tamper_proof():
    token = connection_token("abc")
    assert check_connection_token(token) == "abc"
    assert check_connection_token(token, max_age=-1) is None
    assert check_connection_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert check_connection_token("abc") is None


def test_camel_case_keys_recursively_but_never_values():
    data = {"campaign_id": "camp_a_b", "data": {"is_compliant": True, "issues": [{"artifact_type": "Copy"}]}}
    assert camel(data) == {
        "campaignId": "camp_a_b",
        "data": {"isCompliant": True, "issues": [{"artifactType": "Copy"}]},
    }
    assert camel({"content": "snake_case_text"}) == {"content": "snake_case_text"}


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
            '{"protocol":"messagepack","version":1}',
            'The MessagePack protocol is not supported yet; use the JSON protocol ("json", version 1).',
        ),
        (
            '{"protocol":"xml","version":1}',
            "The protocol 'xml' is not supported; this server speaks 'json' (versions 0 and 1).",
        ),
        (
            '{"protocol":"json","version":2}',
            "The server does not support version 2 of the 'json' protocol; it supports versions 0 and 1.",
        ),
        (
            '{"protocol":"json","version":-1}',
            "The server does not support version -1 of the 'json' protocol; it supports versions 0 and 1.",
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


async def test_a_messagepack_handshake_in_a_binary_frame_gets_a_handshake_error(hub, users):
    connection = await hub(users["alice"], handshake=False)
    await connection.comm.send_input(
        {"type": "websocket.receive", "bytes": b'{"protocol":"messagepack","version":1}\x1e'}
    )
    answer = await connection.next()
    assert answer == {
        "error": 'The MessagePack protocol is not supported yet; use the JSON protocol ("json", version 1).'
    }
    assert (await connection.next())["type"] == "websocket.close"


async def test_a_json_handshake_in_a_binary_frame_is_told_to_use_a_text_frame(hub, users):
    connection = await hub(users["alice"], handshake=False)
    await connection.comm.send_input({"type": "websocket.receive", "bytes": HANDSHAKE.encode()})
    answer = await connection.next()
    assert answer == {"error": 'Send the handshake as a text frame: {"protocol":"json","version":1}.'}
    assert (await connection.next())["type"] == "websocket.close"


# --- transports that are not served ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "accept", "transport"),
    [
        ("get", "*/*", "LongPolling"),  # a long-polling poll
        ("post", "*/*", "LongPolling"),  # a long-polling send
        ("delete", "*/*", "LongPolling"),  # a long-polling close
        ("get", "text/event-stream", "ServerSentEvents"),
    ],
)
def test_long_polling_and_server_sent_events_are_told_only_websockets_are_served(users, method, accept, transport):
    token = connection_token(signalr.new_connection_id())
    client = Client()
    client.force_login(users["alice"])
    response = getattr(client, method)(f"{PATH}?id={token}", HTTP_ACCEPT=accept)
    assert response.status_code == 404  # what ASP.NET Core answers for a transport it does not serve
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["transport"] == transport and body["supportedTransports"] == ["WebSockets"]
    assert f"The {transport} transport is not supported" in body["detail"]
    assert "WebSockets only" in body["detail"]


async def test_unknown_connection_id_is_refused(users):
    comm = WebsocketCommunicator(application, f"{PATH}?id=forged&access_token={token_for(users['alice'])}")
    connected, _ = await comm.connect(timeout=5)
    assert not connected


async def test_expired_connection_id_is_refused(users, monkeypatch):
    token = connection_token("abc")
    monkeypatch.setattr(signalr, "CONNECTION_TOKEN_MAX_AGE", -1)
    comm = WebsocketCommunicator(application, f"{PATH}?id={token}&access_token={token_for(users['alice'])}")
    connected, _ = await comm.connect(timeout=5)
    assert not connected


async def test_skip_negotiation_no_id_is_accepted(hub, users):
    connection = await hub(path=f"{PATH}?access_token={token_for(users['alice'])}")
    campaign = await db(CampaignFactory)(owner=users["alice"])
    assert await connection.call("JoinCampaignGroup", campaign.public_id) == {"type": 3, "invocationId": "1"}


async def test_bearer_header_authenticates(users):
    comm = WebsocketCommunicator(
        application, PATH, headers=[(b"authorization", f"Bearer {token_for(users['alice'])}".encode())]
    )
    assert (await comm.connect(timeout=5))[0]
    connection = Hub(comm)
    await connection.send(HANDSHAKE)
    assert await connection.next() == {}
    assert await connection.quiet()
    await comm.disconnect()


@pytest.mark.parametrize("token", [None, "garbage"])
async def test_unauthenticated_gets_a_close_message_after_the_handshake(hub, users, token):
    path = PATH if token is None else f"{PATH}?access_token={token}"
    connection = await hub(path=path)
    close = await connection.next()
    assert close["type"] == 7 and close.get("allowReconnect") is not True
    assert_readable(close["error"])
    assert "Authentication required" in close["error"]
    assert (await connection.next())["type"] == "websocket.close"


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


async def test_binary_frames_close_the_connection(hub, users):
    connection = await hub(users["alice"])
    await connection.comm.send_input({"type": "websocket.receive", "bytes": b"\x01"})
    assert (await connection.next())["type"] == 7


async def test_a_frame_over_the_limit_is_closed_with_a_reason(hub, users):
    connection = await hub(users["alice"])
    await connection.send(invoke("JoinCampaignGroup", "x" * 200_000, invocation_id="big"))
    close = await connection.next()
    assert close["type"] == 7 and "KB" in close["error"]


# --- the task-012 family ----------------------------------------------------------------------------------------


async def test_task012_family_gets_receive_orchestration_event_in_camel_case(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    artifact = await db(ArtifactFactory)(run=run, type="Copy")
    connection = await hub(users["alice"])
    assert await connection.call("SubscribeToCampaign", campaign.public_id) == {"type": 3, "invocationId": "1"}
    await db(publish)(
        campaign,
        "orchestration.state_changed",
        {"state": "generating", "previous_state": "planning"},
        run_id=run.public_id,
    )

    payload = await db(artifact_payload)(artifact)
    await db(publish)(campaign, "artifact.generated", {"artifact": payload}, run_id=run.public_id)

    first = await connection.next()
    assert first["type"] == 1 and "invocationId" not in first
    assert first["target"] == "ReceiveOrchestrationEvent"
    evt = first["arguments"][0]
    assert evt["event"] == "orchestration.state_changed"
    assert evt["campaignId"] == campaign.public_id and evt["runId"] == run.public_id
    assert evt["sequence"] == 1 and "emittedAt" in evt
    assert evt["data"] == {"state": "generating", "previousState": "planning"}

    second, update = await connection.next(), await connection.next()
    assert second["target"] == "ReceiveOrchestrationEvent" and second["arguments"][0]["sequence"] == 2
    assert update["target"] == "ReceiveArtifactUpdate" and "invocationId" not in update
    sent = update["arguments"][0]
    assert sent["campaignId"] == campaign.public_id and sent["sequence"] == 2
    assert sent["artifact"]["id"] == artifact.public_id and sent["artifact"]["content"] == artifact.content
    assert {"campaignId", "createdAt", "agentName", "runId"} <= set(sent["artifact"])


async def test_get_campaign_snapshot_returns_and_sends_it(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    connection = await hub(users["alice"])
    answer = await connection.call("GetCampaignSnapshot", campaign.public_id)
    snapshot = answer["result"]
    assert "error" not in answer
    assert snapshot["campaignId"] == campaign.public_id and snapshot["currentState"] == "idle"
    assert {"lastEventSequence", "completedArtifacts", "pendingArtifacts", "auditStatus"} <= set(snapshot)
    assert [c["target"] for c in connection.calls] == ["ReceiveCampaignSnapshot"]
    assert connection.calls[0]["arguments"] == [snapshot]


async def test_cancel_run_is_acknowledged(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    connection = await hub(users["alice"])
    await connection.call("SubscribeToCampaign", campaign.public_id, invocation_id="s")
    answer = await connection.call("CancelRun", run.public_id, invocation_id="c")
    assert answer == {"type": 3, "invocationId": "c"}
    acks = [c for c in connection.calls if c.get("target") == "ReceiveCancellationAcknowledgement"]
    assert acks == [{"type": 1, "target": "ReceiveCancellationAcknowledgement", "arguments": [run.public_id]}]
    seen = connection.calls + await connection.until("ReceiveOrchestrationEvent")
    events = [c["arguments"][0]["event"] for c in seen if c.get("target") == "ReceiveOrchestrationEvent"]
    while "run.cancelled" not in events:
        events.append((await connection.until("ReceiveOrchestrationEvent"))[-1]["arguments"][0]["event"])
    assert "run.cancelled" in events


async def test_cancel_of_a_foreign_or_finished_run_is_a_readable_error(hub, users):
    bobs = await db(RunFactory)(campaign=await db(CampaignFactory)(owner=users["bob"]), state="generating")
    done = await db(RunFactory)(campaign=await db(CampaignFactory)(owner=users["alice"]), state="completed")
    connection = await hub(users["alice"])
    assert (await connection.call("CancelRun", bobs.public_id))["error"] == "Run not found."
    error = (await connection.call("CancelRun", done.public_id))["error"]
    assert_readable(error)
    assert "completed" in error


async def publish_progress(campaign, *percentages: int) -> None:
    for percentage in percentages:
        await db(publish)(campaign, "progress", {"percentage": percentage, "message": f"at {percentage}%"})


async def task012_events(connection: Hub, count: int) -> list[dict[str, Any]]:
    """The next ``count`` ReceiveOrchestrationEvent arguments (pings skipped; anything else fails)."""
    events = []
    while len(events) < count:
        message = await connection.next()
        if message.get("type") == 6:
            continue
        assert message.get("target") == "ReceiveOrchestrationEvent", message
        events.append(message["arguments"][0])
    return events


async def test_subscribe_with_last_sequence_replays_what_was_missed_then_live(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3, 4, 5)
    connection = await hub(users["alice"])
    # The Completion comes first, then the replay: nothing arrives before the invoke() resolves.
    assert await connection.call("SubscribeToCampaign", campaign.public_id, 2) == {"type": 3, "invocationId": "1"}
    assert connection.calls == []
    replayed = await task012_events(connection, 3)
    assert [e["sequence"] for e in replayed] == [3, 4, 5]
    assert all(e["replayed"] is True for e in replayed)
    assert [e["data"]["percentage"] for e in replayed] == [3, 4, 5]
    assert all(e["campaignId"] == campaign.public_id and e["event"] == "progress" for e in replayed)

    await publish_progress(campaign, 6, 7)
    live = await task012_events(connection, 2)
    assert [e["sequence"] for e in live] == [6, 7] and not any(e.get("replayed") for e in live)
    assert await connection.quiet()  # no duplicates


async def test_subscribe_with_last_sequence_zero_replays_the_whole_log(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3)
    connection = await hub(users["alice"])
    await connection.call("SubscribeToCampaign", campaign.public_id, 0)
    assert [e["sequence"] for e in await task012_events(connection, 3)] == [1, 2, 3]
    assert await connection.quiet()


async def test_subscribe_with_the_current_sequence_replays_nothing(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2)
    connection = await hub(users["alice"])
    await connection.call("subscribetocampaign", campaign.public_id, 2)
    assert await connection.quiet()
    await publish_progress(campaign, 3)
    assert [e["sequence"] for e in await task012_events(connection, 1)] == [3]


async def test_subscribe_without_or_with_a_null_last_sequence_does_not_replay(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2)
    plain, null = await hub(users["alice"]), await hub(users["alice"])
    await plain.call("SubscribeToCampaign", campaign.public_id)
    await null.call("SubscribeToCampaign", campaign.public_id, None)  # a .NET long? or a JS undefined
    assert await plain.quiet() and await null.quiet()
    await publish_progress(campaign, 3)
    for connection in (plain, null):
        [event] = await task012_events(connection, 1)
        assert event["sequence"] == 3 and "replayed" not in event


async def test_a_resume_while_events_keep_coming_has_no_gap_and_no_duplicate(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, *range(1, 21))
    connection = await hub(users["alice"])
    publisher = asyncio.ensure_future(publish_progress(campaign, *range(21, 41)))
    await connection.call("SubscribeToCampaign", campaign.public_id, 5)
    assert connection.calls == []
    events = await task012_events(connection, 35)
    await publisher
    assert [e["sequence"] for e in events] == list(range(6, 41))
    assert await connection.quiet()


async def test_join_campaign_group_with_last_sequence_replays_its_client_methods(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    await db(publish)(campaign, "campaign.started", {"run_id": run.public_id, "plan": []}, run_id=run.public_id)  # 1
    # 2: progress has no client method in this family
    await db(publish)(campaign, "progress", {"percentage": 50, "message": "half"}, run_id=run.public_id)
    await db(publish)(campaign, "campaign.completed", {"run_id": run.public_id}, run_id=run.public_id)  # 3
    connection = await hub(users["alice"])
    # The seed's family carries no sequence: a client resumes from a snapshot's lastEventSequence.
    assert (await connection.call("GetCampaignSnapshot", campaign.public_id))["result"]["lastEventSequence"] == 3
    assert await connection.call("JoinCampaignGroup", campaign.public_id, 1, invocation_id="j") == {
        "type": 3,
        "invocationId": "j",
    }
    assert (await connection.next())["target"] == "OnCampaignCompleted"  # 2 has no method; 1 was seen
    assert await connection.quiet()
    await db(publish)(campaign, "campaign.started", {"run_id": run.public_id, "plan": []}, run_id=run.public_id)
    assert await connection.next() == {"type": 1, "target": "OnCampaignStarted", "arguments": [campaign.public_id]}


@pytest.mark.parametrize(
    ("method", "snapshot_target"),
    [("SubscribeToCampaign", "ReceiveCampaignSnapshot"), ("JoinCampaignGroup", "OnCampaignStatusReceived")],
)
@pytest.mark.parametrize("pruned", ["before", "beyond"])
async def test_a_resume_the_log_cannot_serve_gets_a_snapshot(hub, users, method, snapshot_target, pruned):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3, 4, 5)
    if pruned == "before":
        await db(CampaignEvent.objects.filter(campaign=campaign, sequence__lte=3).delete)()  # retention
    connection = await hub(users["alice"])
    assert await connection.call(method, campaign.public_id, 1 if pruned == "before" else 99) == {
        "type": 3,
        "invocationId": "1",
    }
    snapshot = await connection.next()
    assert snapshot["target"] == snapshot_target, snapshot
    assert snapshot["arguments"][0]["campaignId"] == campaign.public_id
    assert snapshot["arguments"][0]["lastEventSequence"] == 5
    assert await connection.quiet()  # no replay of 4 and 5: the snapshot includes them
    await db(publish)(campaign, "campaign.completed", {"run_id": None})
    assert (await connection.next())["type"] == 1


@pytest.mark.parametrize(
    ("method", "value", "got"),
    [
        ("SubscribeToCampaign", -1, "got -1"),
        ("SubscribeToCampaign", "3", "got a string"),
        ("SubscribeToCampaign", True, "got true"),
        ("SubscribeToCampaign", 2.5, "got 2.5"),
        ("SubscribeToCampaign", 3.0, "got 3.0"),
        ("JoinCampaignGroup", -1, "got -1"),
        ("JoinCampaignGroup", {}, "got an object"),
    ],
)
async def test_a_bad_last_sequence_is_a_readable_error_and_subscribes_nothing(hub, users, method, value, got):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1)
    connection = await hub(users["alice"])
    answer = await connection.call(method, campaign.public_id, value)
    assert set(answer) == {"type", "invocationId", "error"}
    assert_readable(answer["error"])
    assert answer["error"].startswith(f"The lastSequence argument of {method} must be a non-negative integer")
    assert got in answer["error"]
    await db(publish)(campaign, "campaign.completed", {"run_id": None})
    assert await connection.quiet()  # not subscribed
    ok = await connection.call("JoinCampaignGroup", campaign.public_id, 2, invocation_id="ok")
    assert ok == {"type": 3, "invocationId": "ok"}  # the connection is still usable


# --- the realtime-api family ------------------------------------------------------------------------------------


async def test_realtime_api_family_gets_its_client_methods(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    artifact = await db(ArtifactFactory)(run=run, type="ShortCopy")

    payload = await db(artifact_payload)(artifact)
    connection = await hub(users["alice"])
    assert await connection.call("JoinCampaignGroup", campaign.public_id) == {"type": 3, "invocationId": "1"}

    await db(publish)(campaign, "campaign.started", {"run_id": run.public_id, "plan": ["Copy"]}, run_id=run.public_id)
    # no client method for progress here: not sent
    await db(publish)(campaign, "progress", {"percentage": 10, "message": "working"}, run_id=run.public_id)
    await db(publish_transient)(
        campaign,
        "artifact.chunk",
        {"artifact_type": "Copy", "chunk": "Hel", "chunk_index": 0, "is_complete": False},
        run_id=run.public_id,
    )
    await db(publish)(campaign, "artifact.generated", {"artifact": payload}, run_id=run.public_id)
    audit = {
        "is_compliant": True,
        "compliance_score": 92,
        "issues": [{"artifact_type": "Copy", "issue_description": "fine", "severity": "Low"}],
        "feedback": "ok",
        "audited_at": "2026-11-22T03:40:00Z",
    }
    await db(publish)(campaign, "compliance.completed", audit, run_id=run.public_id)
    await db(publish)(
        campaign,
        "generation.failed",
        {"error_message": "boom", "failed_at": "2026-11-22T03:41:00Z"},
        run_id=run.public_id,
    )
    await db(publish)(campaign, "campaign.completed", {"run_id": run.public_id}, run_id=run.public_id)

    calls = await connection.until("OnCampaignCompleted")
    assert all("invocationId" not in c for c in calls)
    by_target = {c["target"]: c["arguments"] for c in calls}
    assert [c["target"] for c in calls] == [
        "OnCampaignStarted",
        "OnChunkReceived",
        "OnArtifactGenerated",
        "OnComplianceCheckCompleted",
        "OnGenerationFailed",
        "OnCampaignCompleted",
    ]
    assert by_target["OnCampaignStarted"] == [campaign.public_id]
    assert by_target["OnCampaignCompleted"] == [campaign.public_id]
    chunk = by_target["OnChunkReceived"][0]
    assert {k: chunk[k] for k in ("campaignId", "artifactType", "chunk", "isComplete")} == {
        "campaignId": campaign.public_id,
        "artifactType": "Copy",
        "chunk": "Hel",
        "isComplete": False,
    }
    generated = by_target["OnArtifactGenerated"][0]
    assert {"id", "campaignId", "type", "content", "metadata", "createdAt", "agentName"} <= set(generated)
    assert generated["type"] == "ShortCopy" and generated["content"] == artifact.content
    compliance = by_target["OnComplianceCheckCompleted"][0]
    assert compliance["campaignId"] == campaign.public_id and compliance["isCompliant"] is True
    assert compliance["complianceScore"] == 92 and compliance["auditedAt"] == "2026-11-22T03:40:00Z"
    assert compliance["issues"] == [{"artifactType": "Copy", "issueDescription": "fine", "severity": "Low"}]
    failed = by_target["OnGenerationFailed"][0]
    assert failed["campaignId"] == campaign.public_id and failed["errorMessage"] == "boom"
    assert failed["failedAt"] == "2026-11-22T03:41:00Z"


async def test_request_campaign_status_answers_on_campaign_status_received(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    connection = await hub(users["alice"])
    answer = await connection.call("RequestCampaignStatus", campaign.public_id)
    assert answer == {"type": 3, "invocationId": "1"}
    assert [c["target"] for c in connection.calls] == ["OnCampaignStatusReceived"]
    assert connection.calls[0]["arguments"][0]["campaignId"] == campaign.public_id


async def test_families_are_per_subscription(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    task012 = await hub(users["alice"])
    seed = await hub(users["alice"])
    await task012.call("SubscribeToCampaign", campaign.public_id)
    await seed.call("JoinCampaignGroup", campaign.public_id)
    await db(publish)(campaign, "campaign.completed", {"run_id": None})
    assert (await task012.next())["target"] == "ReceiveOrchestrationEvent"
    assert (await seed.next())["arguments"] == [campaign.public_id]


async def test_leave_stops_the_events(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    connection = await hub(users["alice"])
    await connection.call("JoinCampaignGroup", campaign.public_id, invocation_id="j")
    assert await connection.call("LeaveCampaignGroup", campaign.public_id, invocation_id="l") == {
        "type": 3,
        "invocationId": "l",
    }
    await db(publish)(campaign, "campaign.completed", {"run_id": None})
    assert await connection.quiet(0.5)
    await connection.call("SubscribeToCampaign", campaign.public_id, invocation_id="s")
    assert await connection.call("UnsubscribeFromCampaign", campaign.public_id, invocation_id="u") == {
        "type": 3,
        "invocationId": "u",
    }


async def test_system_notices_reach_hub_clients(hub, users):
    from realtime.services import notice_send

    connection = await hub(users["alice"])
    await connection.call("JoinCampaignGroup", "camp_missing")  # the hub is running
    await db(notice_send)(level="warning", message="Maintenance at noon", sent_by=None)
    call = await connection.until("ReceiveSystemNotice")
    assert call[-1]["arguments"][0]["message"] == "Maintenance at noon"


async def test_server_shutdown_sends_close_with_allow_reconnect(hub, users):
    connection = await hub(users["alice"])
    assert "error" in await connection.call("JoinCampaignGroup", "camp_missing")  # the session is set up
    await get_fanout().close_all(timeout=0.5)  # what marketing_agents.serve does when daphne stops
    outputs = []
    while not connection.comm.output_queue.empty():
        outputs.append(connection.comm.output_queue.get_nowait())
    texts = [o["text"] for o in outputs if o["type"] == "websocket.send"]
    assert texts == [
        json.dumps({"type": 7, "error": "The server is shutting down.", "allowReconnect": True}, separators=(",", ":"))
        + RS
    ]
    assert outputs[-1]["type"] == "websocket.close"
    assert outputs[-1].get("code") == 1001  # going away
    assert not signalr.shutting_down()  # only marketing_agents.serve turns new connections away


async def test_while_shutting_down_new_connections_and_negotiations_are_refused(hub, users, monkeypatch):
    monkeypatch.setitem(signalr._shutdown, "started", True)
    comm = WebsocketCommunicator(application, f"{PATH}?access_token={token_for(users['alice'])}")
    assert not (await comm.connect(timeout=5))[0]
    response = await db(Client().post)(NEGOTIATE, HTTP_AUTHORIZATION=f"Bearer {token_for(users['alice'])}")
    assert response.status_code == 503 and "shutting down" in response.json()["error"]


# --- a client that goes while its answer is on the way (real daphne) ----------------------------------------


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455 §5.2)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


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
