"""The SignalR hub's HTTP side (realtime/signalr/http.py): negotiate, and the transports it does not serve."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from campaigns.tests.factories import CampaignFactory
from marketing_agents.asgi import application
from realtime.signalr import http as signalr
from realtime.signalr.http import check_connection_token, connection_token
from realtime.signalr.protocol import camel
from realtime.tests.hubs import (
    HANDSHAKE,
    NEGOTIATE,
    PATH,
    Hub,
    assert_readable,
    db,
    token_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


# --- negotiate ---------------------------------------------------------------------------------------------


def test_negotiate_version_1(users):
    response = Client().post(
        f"{NEGOTIATE}?negotiateVersion=1", HTTP_AUTHORIZATION=f"Bearer {token_for(users['alice'])}"
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"negotiateVersion", "connectionId", "connectionToken", "availableTransports"}
    assert body["negotiateVersion"] == 1
    assert body["availableTransports"] == [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]
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


def test_negotiate_offers_stateful_reconnect_when_asked_and_stores_the_session(users):
    from realtime.signalr import stateful
    from realtime.tests.test_signalr_stateful import stored

    url = f"{NEGOTIATE}?negotiateVersion=1&useStatefulReconnect=true"
    body = Client().post(url, HTTP_AUTHORIZATION=f"Bearer {token_for(users['alice'])}").json()
    assert body["useStatefulReconnect"] is True
    assert signalr.read_connection_token(body["connectionToken"]) == (body["connectionId"], True)
    assert stored(body["connectionId"])["state"] == stateful.NEGOTIATED
    assert stored(body["connectionId"])["user"] == str(users["alice"].pk)


@pytest.mark.parametrize(
    ("query", "window"),
    [
        ("negotiateVersion=1", 120),  # not asked
        ("negotiateVersion=1&useStatefulReconnect=false", 120),
        ("useStatefulReconnect=true", 120),  # version 0: the id is the token, and there is no stateful reconnect
        ("negotiateVersion=1&useStatefulReconnect=true", 0),  # turned off
    ],
)
def test_negotiate_does_not_offer_stateful_reconnect_otherwise(users, settings, query, window):
    settings.SIGNALR_RECONNECT_WINDOW_SECONDS = window
    body = Client().post(f"{NEGOTIATE}?{query}", HTTP_AUTHORIZATION=f"Bearer {token_for(users['alice'])}").json()
    assert "useStatefulReconnect" not in body
    token = body.get("connectionToken", body["connectionId"])
    assert signalr.read_connection_token(token)[1] is False


def test_a_plain_token_expires_and_a_stateful_one_lives_with_its_session(monkeypatch):
    import time

    plain, kept = connection_token("abc"), connection_token("abc", stateful=True)
    assert signalr.read_connection_token(plain) == ("abc", False)
    assert signalr.read_connection_token(kept) == ("abc", True)
    later = time.time() + signalr.CONNECTION_TOKEN_MAX_AGE + 1
    monkeypatch.setattr(time, "time", lambda: later)
    assert signalr.read_connection_token(plain) is None
    assert signalr.read_connection_token(kept) == ("abc", True)  # the consumer then asks for its session
    assert signalr.read_connection_token(kept[:-1] + ("A" if kept[-1] != "A" else "B")) is None


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
