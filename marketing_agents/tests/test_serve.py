"""marketing_agents.serve: daphne as this project runs it, holding less per WebSocket."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import weakref

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from marketing_agents.serve import ApplicationQueue, Server

UPGRADE = (
    b"GET /ws/campaigns/?access_token=x HTTP/1.1\r\n"
    b"Host: testserver\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# --- ApplicationQueue --------------------------------------------------------------------------------------


async def test_queue_hands_items_over_in_order():
    queue = ApplicationQueue()
    queue.put_nowait(1)
    queue.put_nowait(2)
    waiting = asyncio.ensure_future(queue.get())
    assert await queue.get() == 1
    assert await waiting == 2


async def test_a_waiting_get_wakes_on_the_next_item():
    queue = ApplicationQueue()
    waiting = asyncio.ensure_future(queue.get())
    await settle()
    assert not waiting.done()
    queue.put_nowait("message")
    assert await asyncio.wait_for(waiting, 1) == "message"


async def test_a_cancelled_get_leaves_its_item_for_the_next_one():
    queue = ApplicationQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await settle()
    queue.put_nowait("message")  # wakes the first...
    first.cancel()  # ...which leaves before taking it
    await settle()
    assert first.cancelled()
    assert await asyncio.wait_for(second, 1) == "message"


async def test_a_cancelled_get_is_forgotten():
    queue = ApplicationQueue()
    waiting = asyncio.ensure_future(queue.get())
    await settle()
    waiting.cancel()
    await settle()
    queue.put_nowait("message")
    assert await asyncio.wait_for(queue.get(), 1) == "message"


# --- the server ------------------------------------------------------------------------------------------


def make_server(application) -> Server:
    from daphne.http_protocol import HTTPFactory
    from daphne.ws_protocol import WebSocketFactory

    server = Server(application, endpoints=["tcp:port=0:interface=127.0.0.1"], signal_handlers=False)
    # What Server.run() sets up before it listens.
    server.connections = {}
    server.http_factory = HTTPFactory(server)
    server.ws_factory = WebSocketFactory(server, server=server.server_name)
    return server


@pytest.fixture
def accepted():
    scopes = []

    async def application(scope, receive, send):
        scopes.append(scope)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await receive()  # until the socket goes

    return application, scopes


async def test_an_upgraded_request_is_let_go_while_the_websocket_lives(accepted):
    application, scopes = accepted
    server = make_server(application)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    http = server.http_factory.buildProtocol(transport.getPeer())
    http.makeConnection(transport)
    channel = weakref.ref(http._channel)
    assert transport.producer is http._channel  # twisted registers the HTTP channel as the producer

    http.dataReceived(UPGRADE)
    await settle()

    websocket = transport.protocol
    assert type(websocket).__name__ == "WebSocketProtocol"
    assert b"101 Switching Protocols" in transport.value()
    assert scopes and scopes[0]["path"] == "/ws/campaigns/"
    assert transport.producer is None

    server.application_checker()  # daphne's reaper: forgets the finished HTTP request
    del http
    gc.collect()
    assert channel() is None, "the HTTP channel is still reachable"
    assert websocket in server.connections  # the WebSocket itself is untouched

    for details in server.connections.values():
        details["application_instance"].cancel()
    await settle()


async def test_a_plain_http_request_keeps_its_producer():
    async def application(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    server = make_server(application)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50001))
    http = server.http_factory.buildProtocol(transport.getPeer())
    http.makeConnection(transport)
    http.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: testserver\r\n\r\n")
    for _ in range(20):
        await settle()
        if transport.value().endswith(b"ok"):
            break
    assert transport.value().startswith(b"HTTP/1.1 200")
    assert transport.producer is http._channel  # keep-alive HTTP still pauses and resumes the socket


async def test_shutdown_cancels_the_applications_even_with_a_request_still_arriving(monkeypatch):
    from realtime.signalr import http as signalr

    monkeypatch.setitem(signalr._shutdown, "started", False)

    async def application(scope, receive, send):
        await asyncio.sleep(3600)

    server = make_server(application)
    websocket = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50002))
    upgraded = server.http_factory.buildProtocol(websocket.getPeer())
    upgraded.makeConnection(websocket)
    upgraded.dataReceived(UPGRADE)
    arriving = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50003))
    request = server.http_factory.buildProtocol(arriving.getPeer())
    request.makeConnection(arriving)
    request.dataReceived(b"POST /api/campaigns/ HTTP/1.1\r\nHost: testserver\r\nContent-Length: 100\r\n\r\n{")
    await settle()
    applications = [d["application_instance"] for d in server.connections.values() if "application_instance" in d]
    # The POST (and the request just upgraded, until daphne reaps it) have no application yet.
    assert len(applications) == 1 and len(server.connections) == 3

    await asyncio.wait_for(server.kill_all_applications().asFuture(asyncio.get_running_loop()), 5)

    assert applications[0].cancelled()
    assert signalr.shutting_down()  # negotiations are turned away from now on


# --- the private internals it relies on ----------------------------------------------------------------------


def test_the_pinned_daphne_twisted_and_autobahn_have_every_internal_relied_on():
    from marketing_agents.serve import check_internals

    assert check_internals() == []


@pytest.mark.parametrize(
    ("owner", "name", "reported"),
    [
        ("twisted.internet.abstract.FileDescriptor", "dataBuffer", "FileDescriptor.dataBuffer"),
        ("daphne.ws_protocol.WebSocketProtocol", "_max_message_size_exceeded", "_max_message_size_exceeded"),
        ("daphne.server", "WebSocketFactory", "daphne.server.WebSocketFactory"),
    ],
)
def test_a_changed_library_stops_the_server_at_start_up_and_is_counted(monkeypatch, owner, name, reported):
    """As if an upgrade had renamed what backpressure or the frame limits read: the server refuses to
    start, saying what is missing, instead of running with them silently off."""
    import importlib

    from marketing_agents.serve import require_internals
    from realtime.metrics import INTERNALS_BROKEN

    module, _, attribute = owner.rpartition(".")
    try:
        target = getattr(importlib.import_module(module), attribute)
    except AttributeError:
        target = importlib.import_module(owner)
    if name in vars(target):
        monkeypatch.delattr(target, name)
    else:  # inherited: shadow it with nothing
        for base in type.mro(target) if isinstance(target, type) else []:
            if name in vars(base):
                monkeypatch.delattr(base, name)
    with pytest.raises(SystemExit) as stopped:
        require_internals()
    assert reported in str(stopped.value) and "requirements.txt" in str(stopped.value)
    counted = [sample for sample in INTERNALS_BROKEN.collect()[0].samples if sample.name.endswith("_total")]
    assert any(reported in sample.labels["probe"] and sample.value >= 1 for sample in counted)


def test_a_transport_without_a_readable_buffer_is_reported_not_silently_ignored(caplog):
    from realtime.connection import Connection
    from realtime.metrics import INTERNALS_BROKEN

    class Session(Connection):
        connection_id = "c1"

        async def base_send(self, message):  # noqa: ARG002 - never called
            raise AssertionError

    before = INTERNALS_BROKEN.labels("transport_buffer")._value.get()
    session = Session()
    session.connection_setup()
    session._transport = object()  # what a changed Twisted would hand over
    assert session.buffered_bytes() == 0
    assert session.buffered_bytes() == 0
    assert INTERNALS_BROKEN.labels("transport_buffer")._value.get() == before + 1, "counted once per connection"
    assert "backpressure is off" in caplog.text


@pytest.mark.e2e
def test_the_web_process_listens_with_a_backlog_big_enough_for_a_reconnect_storm(start_web):
    """Twisted's default of 50 overflowed when thousands of clients came back at once: the kernel
    dropped their SYNs and some waited a minute. ``ss`` shows a listening socket's backlog as Send-Q."""
    server = start_web(WEB_LISTEN_BACKLOG="1500")
    listening = subprocess.run(
        ["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listening[0] == "LISTEN" and listening[2] == "1500", listening


def test_autobahns_debug_text_is_made_only_when_written_and_its_timings_stay_text(monkeypatch):
    import autobahn.websocket.protocol as protocol

    from marketing_agents.serve import quiet_autobahn_debug

    monkeypatch.setattr(protocol, "pformat", protocol.pformat)
    monkeypatch.setattr(protocol.Timings, "__str__", protocol.Timings.__str__)
    quiet_autobahn_debug()
    lazy = protocol.pformat([("openHandshakeTimeout", 5, "factory")])
    assert not isinstance(lazy, str) and "openHandshakeTimeout" in str(lazy)
    timings = protocol.Timings()
    timings.track("onOpen")
    assert isinstance(str(timings), str) and "onOpen" in str(timings)
