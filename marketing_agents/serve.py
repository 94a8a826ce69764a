"""Run daphne with this project's defaults and an access log that never shows a token.

    python -m marketing_agents.serve [-b 127.0.0.1] [-p 8000] [daphne options…]

daphne's own access log prints each request's path with its query string, and browsers and
SignalR clients put ``access_token`` there; this swaps in a log line with secrets redacted. WebSocket
pings every WS_PING_INTERVAL_SECONDS, and a connection that answers nothing for
WS_IDLE_TIMEOUT_SECONDS is closed (PROTOCOL.md §5).

It also lets go of the HTTP request a WebSocket was upgraded from (see ``Server``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import pprint
import sys
from collections import deque
from functools import partial
from typing import Any

import autobahn.websocket.protocol
import daphne.cli
import daphne.endpoints
import daphne.http_protocol
import daphne.server
import daphne.ws_protocol
from daphne.access import AccessLogGenerator
from twisted.internet import abstract, defer
from twisted.web import http

from marketing_agents.logging import redact

logger = logging.getLogger(__name__)

# At shutdown, how long the frames telling WebSocket clients to reconnect get to leave.
SHUTDOWN_GOODBYE_SECONDS = 1.0


class RedactedAccessLog(AccessLogGenerator):
    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None) -> None:
        super().write_entry(host, date, redact(request), status, length, ident, user)


class ApplicationQueue:
    """The queue behind an application's ``receive``, as daphne uses it (``put_nowait`` and ``get``).

    daphne gives every connection an ``asyncio.Queue``: four deques of 624 bytes each (items,
    getters, putters, and the ``join`` event's waiters) before the first message. This keeps the
    items' deque and no more; one coroutine at a time waits on a connection's ``receive``.
    """

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._getters: list[asyncio.Future] = []

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake_next()

    def _wake_next(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if getter in self._getters:
                    self._getters.remove(getter)
                elif self._items and not getter.cancelled():
                    self._wake_next()  # it was woken for an item it will not take
                raise
        return self._items.popleft()


class Server(daphne.server.Server):
    """daphne's server, with WebSocket clients told to reconnect at shutdown, and less memory held
    per WebSocket.

    ``kill_all_applications`` (daphne runs it before the reactor shuts down, then cancels every
    application) first closes every WebSocket with 1001, the SignalR hub's after its Close message
    with ``allowReconnect``, and waits until those frames are written (at most
    SHUTDOWN_GOODBYE_SECONDS). Otherwise the sockets drop when the process exits (1006), and a
    SignalR client that reads no Close message may not reconnect.

    ``create_application`` is daphne's, with an ``ApplicationQueue`` in place of ``asyncio.Queue``.

    When a request upgrades to a WebSocket, daphne hands the TCP transport to the WebSocket
    protocol but leaves twisted's HTTPChannel registered as the transport's producer; through it the
    channel, its WebRequest, the request's headers and parser state stay reachable until the socket
    closes (about 4 KiB per idle WebSocket). That registration does nothing for an upgraded request
    (the channel has no request producer, and it never pauses a transport while a request is being
    handled), so drop it once daphne reports the request done; the channel is then garbage.
    """

    def protocol_disconnected(self, protocol) -> None:
        super().protocol_disconnected(protocol)
        if not isinstance(protocol, daphne.http_protocol.WebRequest) or protocol.transport is not None:
            return  # not a request daphne has just upgraded (it hands its transport over)
        channel = protocol.channel
        transport = getattr(channel, "transport", None)
        upgraded = isinstance(getattr(transport, "protocol", None), daphne.ws_protocol.WebSocketProtocol)
        if upgraded and getattr(transport, "producer", None) is channel:
            transport.unregisterProducer()

    def kill_all_applications(self) -> defer.Deferred:
        from realtime.fanout import close_all_connections
        from realtime.signalr import http as signalr

        def failed(failure) -> None:
            logger.warning("closing the WebSockets at shutdown failed: %s", failure.getErrorMessage())

        signalr.begin_shutdown()  # negotiations and new hub connections are turned away from now on
        goodbye = defer.Deferred.fromFuture(asyncio.ensure_future(close_all_connections(SHUTDOWN_GOODBYE_SECONDS)))
        goodbye.addErrback(failed)
        goodbye.addCallback(lambda _: self._cancel_applications())
        return goodbye

    def _cancel_applications(self) -> defer.Deferred:
        """daphne's kill_all_applications, except that a request still arriving (registered, with no
        application yet) is skipped instead of raising KeyError and leaving every application running."""
        waiting = []
        for details in self.connections.values():
            application_instance = details.get("application_instance")
            if application_instance is not None and not application_instance.done():
                application_instance.cancel()
                waiting.append(application_instance)
        logger.info("Killed %i pending application instances", len(waiting))
        cancelled = defer.Deferred.fromFuture(asyncio.gather(*waiting))
        cancelled.addErrback(lambda _: None)
        return cancelled

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> ApplicationQueue | None:
        assert "application_instance" not in self.connections[protocol]
        input_queue = ApplicationQueue()
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=input_queue.get, send=partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance, loop=asyncio.get_event_loop()
        )
        return input_queue


class WebRequest(daphne.http_protocol.WebRequest):
    """daphne's request without Twisted's form parsing. Twisted parses a POST's urlencoded or
    multipart body into ``args``, which daphne never reads, and answers a malformed multipart body
    with a bare 400 before Django sees it; Django parses bodies itself (JSON errors, its own limits)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)


class HTTPFactory(daphne.http_protocol.HTTPFactory):
    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = WebRequest
        return protocol


class WebSocketProtocol(daphne.ws_protocol.WebSocketProtocol):
    """daphne's WebSocket protocol, with what autobahn refuses on its own said the project's way."""

    def _max_message_size_exceeded(self, msg_size: int, max_msg_size: int, reason: str) -> None:
        """A frame over --websocket-max-message-size never reaches a consumer: the client reads what
        the consumers say for a frame over WS_MAX_FRAME_BYTES, then close 1009 (not a dropped socket)."""
        from realtime.routing import oversized_frame_notice

        if self.state == self.STATE_OPEN:
            self.sendMessage(oversized_frame_notice(self.path.decode("ascii")).encode())
        self._fail_connection(self.CLOSE_STATUS_CODE_MESSAGE_TOO_BIG, "message too large")

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        if reason.startswith("HTTP Origin header"):
            code = 403  # a malformed or repeated Origin is refused as a foreign one is (PROTOCOL.md)
        super().failHandshake(reason, code, responseHeaders)


class WebSocketFactory(daphne.ws_protocol.WebSocketFactory):
    protocol = WebSocketProtocol

    def setProtocolOptions(self, **options: Any) -> None:
        # A protocol violation (a frame over the limit, text that is not UTF-8) is answered with a
        # close frame saying why (1009, 1007), not by dropping the TCP connection (1006).
        super().setProtocolOptions(**options, failByDrop=False)


class LazyPformat:
    """autobahn pretty-prints every new connection's options for a debug line that is switched off
    (``self.log.debug("\\n{attrs}", attrs=pformat(...))`` in ``_connectionMade``): 2 % of a reconnect
    storm's CPU. Put in place of its ``pformat``, the text is made only if the line is written."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)


def quiet_autobahn_debug() -> None:
    autobahn.websocket.protocol.pformat = LazyPformat
    # autobahn's other use of pformat must return text (it is a __str__): it gets the real one.
    autobahn.websocket.protocol.Timings.__str__ = lambda timings: pprint.pformat(timings._timings)


def check_internals() -> list[str]:
    """What of daphne, Twisted and autobahn this module and realtime.connection rely on beyond their
    public API, checked at start-up: a missing piece would silently switch off backpressure, frame
    limits or the request parsing above. Returns what is missing (nothing, on the pinned versions)."""
    problems = []
    for owner, names in (
        (daphne.server, ("HTTPFactory", "WebSocketFactory")),
        (daphne.server.Server, ("protocol_disconnected", "kill_all_applications", "create_application")),
        (daphne.ws_protocol.WebSocketProtocol, ("_max_message_size_exceeded", "_fail_connection", "sendCloseFrame")),
        (autobahn.websocket.protocol, ("pformat", "Timings")),
        (autobahn.websocket.protocol.Timings(), ("_timings",)),
        (daphne.cli, ("build_endpoint_description_strings",)),
        # realtime.connection reads a transport's write buffer (a descriptor made only to look)
        (abstract.FileDescriptor(reactor=object()), ("dataBuffer", "offset", "_tempDataLen")),
    ):
        label = getattr(owner, "__name__", type(owner).__name__)
        problems += [f"{label}.{name}" for name in names if not hasattr(owner, name)]
    for function, parameter in (
        (http.Request.__init__, "parsePOSTFormSubmission"),
        (autobahn.websocket.protocol.WebSocketServerFactory.setProtocolOptions, "failByDrop"),
    ):
        if parameter not in inspect.signature(function).parameters:
            problems.append(f"{function.__qualname__}({parameter}=)")
    return problems


def require_internals() -> None:
    """Refuse to start on a daphne/Twisted/autobahn that changed under us (and count it on /metrics)."""
    from realtime.metrics import INTERNALS_BROKEN

    problems = check_internals()
    for problem in problems:
        INTERNALS_BROKEN.labels(problem).inc()
    if problems:
        raise SystemExit(
            "marketing_agents.serve: daphne, Twisted or autobahn changed under it; missing: "
            + ", ".join(problems)
            + ". Install the versions pinned in requirements.txt, or update marketing_agents/serve.py."
        )


def with_backlog(backlog: int):
    """daphne's endpoint strings for -b/-p, with a listen backlog (Twisted's default is 50). With 50,
    a reconnect storm overflows the accept queue: the kernel drops the SYNs, and the clients'
    retransmissions back off 1, 2, 4 ... 32 s (one bench client waited 61 s to re-attach)."""

    def build(*args: Any, **kwargs: Any) -> list[str]:
        built = daphne.endpoints.build_endpoint_description_strings(*args, **kwargs)
        return [f"{entry}:backlog={backlog}" if entry.startswith("tcp:") else entry for entry in built]

    return build


class CommandLineInterface(daphne.cli.CommandLineInterface):
    server_class = Server


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketing_agents.settings")
    import django
    from django.conf import settings

    django.setup()
    require_internals()
    daphne.cli.AccessLogGenerator = RedactedAccessLog
    daphne.cli.build_endpoint_description_strings = with_backlog(settings.WEB_LISTEN_BACKLOG)
    autobahn.websocket.protocol.pformat = LazyPformat
    # daphne's Server.run builds its factories from these module names.
    daphne.server.HTTPFactory, daphne.server.WebSocketFactory = HTTPFactory, WebSocketFactory
    defaults = [
        "--ping-interval",
        str(settings.WS_PING_INTERVAL_SECONDS),
        "--ping-timeout",
        str(settings.WS_IDLE_TIMEOUT_SECONDS),
        "--websocket-max-message-size",
        str(max(settings.WS_MAX_FRAME_BYTES * 2, 1 << 20)),
        "--application-close-timeout",
        "5",
    ]
    CommandLineInterface().run([*defaults, *argv, "marketing_agents.asgi:application"])


if __name__ == "__main__":
    main(sys.argv[1:])
