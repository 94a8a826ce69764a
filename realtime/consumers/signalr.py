"""The SignalR-compatible hub, ``/hubs/campaign`` (docs/SIGNALR.md): the JSON and MessagePack hub
protocols over WebSockets.

It is a ``RealtimeSession`` like the native consumer: authentication, authorization, limits,
subscriptions and gap-free delivery are the shared ones; this class parses hub-protocol records and
renders frames as client-method invocations of the family a subscription was made with. Everything
is rendered as JSON records; a MessagePack connection gets the same messages re-encoded (once per
event and family, for every local MessagePack subscriber), and its binary messages are parsed into
the same dicts as JSON records, so the two protocols share every method and payload.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from django.conf import settings

from eventlog.reads import CAMPAIGN
from marketing_agents.errors import DATABASE_DOWN
from realtime.connection import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER
from realtime.consumers.base import (
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHENTICATED,
    MESSAGES,
    STREAMS,
    ClientError,
    RealtimeSession,
)
from realtime.delivery import Subscription
from realtime.metrics import ERRORS
from realtime.signalr import http as signalr_http
from realtime.signalr.families import REALTIME_API, STREAM, TASK012, render_frame
from realtime.signalr.protocol import (
    CANCEL_INVOCATION,
    CLOSE,
    COMPLETION,
    INVOCATION,
    PING,
    RS,
    STREAM_INVOCATION,
    STREAM_ITEM,
    InvalidRecord,
    camel,
    handshake_protocol,
    invocation,
    json_records_to_messagepack,
    parse,
    record,
    unpack,
)

logger = logging.getLogger("realtime.connections")

CLOSE_NORMAL = 1000
# The client method a stream's snapshot arrives as (GetAccountSnapshot, and a resume too old for the log).
STREAM_SNAPSHOTS = {"account": "ReceiveAccountSnapshot", "ops": "ReceiveOpsSnapshot"}
# Codes whose error ends the connection: sent as a Close message, not as a Completion.
FATAL_CODES = {"unauthenticated", "token_expired"}


class Invocation:
    """The hub-method call being handled: its id (None for a fire-and-forget send) and whether it was answered."""

    def __init__(self, invocation_id: str | None) -> None:
        self.invocation_id = invocation_id
        self.completed = False


class SignalRHubConsumer(RealtimeSession):
    protocol_name = "signalr"

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def on_connect(self) -> None:
        self.handshake_done = False
        self.invocation: Invocation | None = None
        self.last_write = time.monotonic()
        self._pinger: asyncio.Task | None = None
        self._closed = False  # no more hub-protocol output
        self._socket_closed = False  # the WebSocket close was sent
        self.binary = False  # MessagePack (chosen in the handshake): binary frames both ways
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = query.get("id", [None])[0]
        if signalr_http.shutting_down():
            await self.close()
            return
        if token is not None and signalr_http.check_connection_token(token) is None:
            logger.info("signalr %s refused: unknown or expired connection id", self.connection_id)
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        # Accepted; whether the user may stay is told after the hub handshake, which must come first.
        await self.accept()

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        """Once: RealtimeSession.start_session accepts again after the hub handshake."""
        if not self.accepted:
            self.accepted = True
            await super().accept(subprotocol, headers)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._closed = True
        if self._pinger is not None:
            self._pinger.cancel()
        await super().websocket_disconnect(message)

    async def say_goodbye(self) -> None:
        """The server is shutting down (marketing_agents.serve, before any application is cancelled):
        after the hub handshake, the hub's Close message with allowReconnect; then close 1001."""
        if self.handshake_done and not self._closed:
            await self.close_with("The server is shutting down.", allow_reconnect=True, code=CLOSE_GOING_AWAY)
        else:
            await super().say_goodbye()

    async def close_with(self, error: str | None, *, allow_reconnect: bool = False, code: int = CLOSE_NORMAL) -> None:
        """A Close message (why, and whether to reconnect), then the WebSocket close."""
        if self._closed:
            return
        message: dict[str, Any] = {"type": CLOSE}
        if error:
            message["error"] = error
        if allow_reconnect:
            message["allowReconnect"] = True
        await self.write(record(message))
        self._closed = True
        await self.close(code)

    # --- writing --------------------------------------------------------------------------------------------

    async def write(self, text: str | bytes) -> None:
        if not text:  # an event this family has no client method for
            return
        if self.client_gone():  # no more hub-protocol output (Connection.write drops it)
            self._closed = True
        self.last_write = time.monotonic()
        if self.binary and isinstance(text, str):
            text = json_records_to_messagepack(text)
        await super().write(text)

    async def _ping_loop(self) -> None:
        """A Ping whenever nothing else was sent for WS_PING_INTERVAL_SECONDS (the client gives up after 30 s)."""
        interval = settings.WS_PING_INTERVAL_SECONDS
        while not self._closed:
            wait = self.last_write + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            await self.write(record({"type": PING}))

    # --- rendering (overrides of realtime.connection) ---------------------------------------------------------

    def render_event(self, subscription: Subscription, message: dict[str, Any]) -> str | bytes:
        # The hub hands one message dict to every local subscriber: render once per family and protocol.
        rendered = message.setdefault("_signalr", {})
        key = (subscription.family, self.binary)
        if key not in rendered:
            text = rendered.get((subscription.family, False))
            if text is None:
                text = rendered[(subscription.family, False)] = render_frame(
                    subscription.family, json.loads(message["frame"])
                )
            if self.binary:
                rendered[key] = json_records_to_messagepack(text) if text else b""
        return rendered[key]

    def render_replayed(self, subscription: Subscription, frame: dict[str, Any]) -> str:
        return render_frame(subscription.family, frame)

    def render_notice(self, message: dict[str, Any]) -> str:
        frame = json.loads(message["frame"])
        return invocation("ReceiveSystemNotice", camel({k: v for k, v in frame.items() if k != "type"}))

    # --- what RealtimeSession asks for ---------------------------------------------------------------------------

    async def send_error(self, error: ClientError, request_id: Any = None) -> None:
        ERRORS.labels(error.code).inc()
        if error.code in FATAL_CODES:
            await self.close_with(
                error.message, allow_reconnect=error.code == "token_expired", code=CLOSE_UNAUTHENTICATED
            )
        elif error.code == "message_too_large":
            await self.close_with(error.message, code=CLOSE_TOO_BIG)
        else:
            await self.complete(error=error.message)

    async def refuse_unavailable(self) -> None:
        """The database is down: the hub's Close message says so and allows a reconnect (a client with
        automatic reconnect tries again), then close 1013."""
        ERRORS.labels("unavailable").inc()
        await self.close_with(DATABASE_DOWN, allow_reconnect=True, code=CLOSE_TRY_AGAIN_LATER)

    async def delivery_failed(self) -> None:
        """A subscription's delivery broke: reconnecting (and re-joining) starts it afresh."""
        ERRORS.labels("internal_error").inc()
        await self.close_with(MESSAGES["internal_error"], allow_reconnect=True)

    async def send_subscribed(self, subscription: Subscription, last_sequence: int) -> None:
        # Answered here, before the subscription's catch-up can send any event.
        await self.complete()

    async def send_snapshot(self, subscription: Subscription, snapshot: dict[str, Any], *, resync: bool) -> None:
        if subscription.log.kind != CAMPAIGN:
            target = STREAM_SNAPSHOTS[subscription.name]
        elif subscription.family == TASK012:
            target = "ReceiveCampaignSnapshot"
        else:
            target = "OnCampaignStatusReceived"
        await self.write(invocation(target, camel(snapshot)))

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        if code == 1008 and not self._closed:  # the rate limit, kept up (RealtimeSession.check_rate)
            await self.write(record({"type": CLOSE, "error": ClientError("rate_limited").message}))
        self._closed = True
        if self._socket_closed:
            return
        self._socket_closed = True
        await super().close(code, reason)

    async def complete(self, result: Any = None, *, error: str | None = None, has_result: bool = False) -> None:
        """The Completion of the current invocation (nothing for a fire-and-forget send, nor twice)."""
        current = self.invocation
        if current is None or current.completed:
            return
        current.completed = True
        if current.invocation_id is None:
            return
        message: dict[str, Any] = {"type": COMPLETION, "invocationId": current.invocation_id}
        if error is not None:
            message["error"] = error
        elif has_result:
            message["result"] = result
        await self.write(record(message))

    # --- records from the client ------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self._closed or self.closing:
            return
        try:
            if text_data is None:
                data = bytes_data or b""
                self.check_size(data)
                if not self.handshake_done:
                    # The handshake is JSON for every protocol; a client may send it in a binary frame.
                    first, separator, rest = data.partition(RS.encode())
                    await self.handshake(first.decode("utf-8", "replace") + separator.decode(), rest=rest)
                    return
                if not self.binary:
                    raise InvalidRecord("Binary frames carry MessagePack; this connection chose the JSON protocol.")
                messages = unpack(data)
                if not messages and not await self.check_rate():  # an empty frame still counts
                    return
            else:
                self.check_size(text_data)
                if self.binary and self.handshake_done:
                    raise InvalidRecord("Text frames carry JSON; this connection chose the MessagePack protocol.")
        except ClientError as error:
            await self.send_error(error)
            return
        except InvalidRecord as error:
            logger.info("signalr %s: invalid message (%s)", self.connection_id, error)
            await self.close_with(f"Invalid message: {error}" if self.binary else str(error))
            return
        if text_data is None:
            await self.handle_all(messages)
            return
        if not self.handshake_done:  # its answer is a handshake response, whatever the frame holds
            await self.handshake(text_data)
            return
        if not text_data.endswith(RS):
            await self.close_with("Every record must end with the record separator (0x1E).")
            return
        if not self.user or not self.user.is_authenticated:
            return
        messages = []
        for text in text_data.split(RS)[:-1]:
            try:
                messages.append(parse(text))
            except InvalidRecord as error:
                await self.handle_all(messages)
                logger.info("signalr %s: invalid record (%s)", self.connection_id, error)
                await self.close_with(f"Invalid record: {error}")
                return
        await self.handle_all(messages)

    async def handle_all(self, messages: list[dict[str, Any]]) -> None:
        """Each message of a frame in turn (each counted by the rate limit: a frame may hold many)."""
        if not self.user or not self.user.is_authenticated:
            return
        for message in messages:
            if self._closed:
                return
            if not await self.check_rate():
                if message["type"] in (INVOCATION, STREAM_INVOCATION) and message.get("invocationId") is not None:
                    self.invocation = Invocation(message["invocationId"])
                    await self.complete(error=ClientError("rate_limited").message)
                    self.invocation = None
                continue
            await self.handle(message)

    async def handshake(self, text: str, *, rest: bytes = b"") -> None:
        first, separator, text_rest = text.partition(RS)
        try:
            request = json.loads(first)
        except (ValueError, RecursionError):
            request = None
        protocol, error = handshake_protocol(request)
        if error is None and not separator:
            error = "Invalid handshake: it must end with the record separator (0x1E)."
        if error is not None:
            logger.info("signalr %s: handshake refused (%s)", self.connection_id, error)
            await self.write(record({"error": error}))
            self._closed = True
            await self.close(CLOSE_NORMAL)
            return
        self.handshake_done = True
        await self.write(record({}))  # JSON for every protocol
        self.binary = protocol == "messagepack"
        if not await self.start_session():
            return
        self._pinger = asyncio.ensure_future(self._ping_loop())
        if rest and self.binary:
            await self.receive(bytes_data=rest)
        elif rest:  # a JSON client's records after its handshake, in the same binary frame
            await self.receive(text_data=rest.decode("utf-8", "replace"))
        elif text_rest and not self.binary:
            await self.receive(text_data=text_rest)

    async def handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == CLOSE:
            self._closed = True
            await self.close(CLOSE_NORMAL)
            return
        if kind in (PING, CANCEL_INVOCATION, STREAM_ITEM, COMPLETION) or kind not in (INVOCATION, STREAM_INVOCATION):
            return  # pings keep the connection alive; there are no server streams; unknown types are ignored
        self.invocation = Invocation(message.get("invocationId"))
        try:
            if kind == STREAM_INVOCATION:
                raise ClientError("bad_request", "Streaming hub methods are not supported by this server.")
            if message.get("streamIds"):
                raise ClientError("bad_request", "Streaming arguments are not supported by this server.")
            await self.invoke(message["target"], message["arguments"])
        except ClientError as error:
            logger.info(
                "signalr %s user=%s: %r failed: %s",
                self.connection_id,
                self.user.get_username(),
                message["target"][:40],
                error.message,
            )
            await self.send_error(error)
        except Exception:
            logger.exception("signalr %s: %r failed", self.connection_id, message["target"][:40])
            await self.send_error(ClientError("internal_error"))
        else:
            await self.complete()
        finally:
            self.invocation = None

    async def invoke(self, target: str, arguments: list[Any]) -> None:
        method = HUB_METHODS.get(target.lower())
        if method is None:
            raise ClientError("unknown_type", f"Unknown hub method {target[:40]!r}.")
        required, optional = len(method.parameters), len(method.optional)
        if not required <= len(arguments) <= required + optional:
            if optional:
                counts = f"{required} {'or' if optional == 1 else 'to'} {required + optional} arguments"
            else:
                counts = f"{required} argument{'' if required == 1 else 's'}"
            raise ClientError("bad_request", f"{method.name} takes {counts}; got {len(arguments)}.")
        for parameter, argument in zip(method.parameters, arguments, strict=False):
            if not isinstance(argument, str):
                raise ClientError("bad_request", f"The {parameter} argument of {method.name} must be a string.")
        await method.function(self, *arguments)

    # --- hub methods --------------------------------------------------------------------------------------------

    async def subscribe_to_campaign(self, campaign_id: str, last_sequence: Any = None) -> None:
        await self.subscribe(campaign_id, resume_from("SubscribeToCampaign", last_sequence), family=TASK012)

    async def join_campaign_group(self, campaign_id: str, last_sequence: Any = None) -> None:
        await self.subscribe(campaign_id, resume_from("JoinCampaignGroup", last_sequence), family=REALTIME_API)

    async def leave(self, campaign_id: str) -> None:
        if campaign_id not in STREAMS:  # a campaign method leaves campaigns only
            await self.drop_subscription(campaign_id)  # leaving a group one is not in is not an error

    async def get_campaign_snapshot(self, campaign_id: str) -> None:
        snapshot = camel(await self.snapshot(await self.visible_campaign(campaign_id)))
        await self.write(invocation("ReceiveCampaignSnapshot", snapshot))
        await self.complete(snapshot, has_result=True)

    async def request_campaign_status(self, campaign_id: str) -> None:
        snapshot = camel(await self.snapshot(await self.visible_campaign(campaign_id)))
        await self.write(invocation("OnCampaignStatusReceived", snapshot))

    async def cancel(self, run_id: str) -> None:
        run_id = await self.cancel_run(run_id)
        await self.write(invocation("ReceiveCancellationAcknowledgement", run_id))

    async def subscribe_to_account(self, last_sequence: Any = None) -> None:
        await self.subscribe_stream("account", resume_from("SubscribeToAccount", last_sequence), family=STREAM)

    async def subscribe_to_ops(self, last_sequence: Any = None) -> None:
        await self.subscribe_stream("ops", resume_from("SubscribeToOps", last_sequence), family=STREAM)

    async def unsubscribe_from_account(self) -> None:
        await self.drop_subscription("account")

    async def unsubscribe_from_ops(self) -> None:
        await self.drop_subscription("ops")

    async def get_account_snapshot(self) -> None:
        snapshot = camel(await self.log_snapshot(await self.visible_stream("account")))
        await self.write(invocation(STREAM_SNAPSHOTS["account"], snapshot))
        await self.complete(snapshot, has_result=True)


def resume_from(method: str, last_sequence: Any) -> int | None:
    """The optional ``lastSequence`` argument of a subscription: the last sequence the client saw, to
    resume from (PROTOCOL.md §5, ``subscribe`` with ``last_sequence``). Left out, or null (what a .NET
    ``long?`` or a JavaScript ``undefined`` sends), it is a plain subscription."""
    if last_sequence is None:
        return None
    if isinstance(last_sequence, int) and not isinstance(last_sequence, bool) and last_sequence >= 0:
        return last_sequence
    if isinstance(last_sequence, str):
        got = "a string"
    elif isinstance(last_sequence, (dict, list)):
        got = "an object" if isinstance(last_sequence, dict) else "an array"
    else:  # true/false, a float, a negative integer (or, over MessagePack, bytes or a timestamp)
        try:
            got = json.dumps(last_sequence)[:24]
        except (TypeError, ValueError):
            got = f"a value of type {type(last_sequence).__name__}"
    raise ClientError(
        "bad_request",
        f"The lastSequence argument of {method} must be a non-negative integer "
        f"(the last event sequence received); got {got}.",
    )


class HubMethod(NamedTuple):
    name: str
    function: Callable[..., Awaitable[None]]
    parameters: tuple[str, ...]  # required, all strings
    optional: tuple[str, ...] = ()  # checked by the method itself


_CAMPAIGN = ("campaignId",)
_RESUMABLE = ("lastSequence",)
# lower-cased name -> the method
HUB_METHODS: dict[str, HubMethod] = {
    method.name.lower(): method
    for method in (
        HubMethod("SubscribeToCampaign", SignalRHubConsumer.subscribe_to_campaign, _CAMPAIGN, _RESUMABLE),
        HubMethod("UnsubscribeFromCampaign", SignalRHubConsumer.leave, _CAMPAIGN),
        HubMethod("GetCampaignSnapshot", SignalRHubConsumer.get_campaign_snapshot, _CAMPAIGN),
        HubMethod("CancelRun", SignalRHubConsumer.cancel, ("runId",)),
        HubMethod("JoinCampaignGroup", SignalRHubConsumer.join_campaign_group, _CAMPAIGN, _RESUMABLE),
        HubMethod("LeaveCampaignGroup", SignalRHubConsumer.leave, _CAMPAIGN),
        HubMethod("RequestCampaignStatus", SignalRHubConsumer.request_campaign_status, _CAMPAIGN),
        HubMethod("SubscribeToAccount", SignalRHubConsumer.subscribe_to_account, (), _RESUMABLE),
        HubMethod("UnsubscribeFromAccount", SignalRHubConsumer.unsubscribe_from_account, ()),
        HubMethod("GetAccountSnapshot", SignalRHubConsumer.get_account_snapshot, ()),
        HubMethod("SubscribeToOps", SignalRHubConsumer.subscribe_to_ops, (), _RESUMABLE),
        HubMethod("UnsubscribeFromOps", SignalRHubConsumer.unsubscribe_from_ops, ()),
    )
}
