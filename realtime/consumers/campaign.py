"""The native WebSocket, ``/ws/campaigns/`` (PROTOCOL.md §5): campaigns, and the account and
operations streams (§11)."""

from __future__ import annotations

import json
import logging
from typing import Any

from eventlog.publisher import dumps
from eventlog.reads import CAMPAIGN
from realtime.consumers.base import CLOSE_TOO_BIG, STREAMS, ClientError, RealtimeSession
from realtime.delivery import Subscription
from realtime.metrics import ERRORS

logger = logging.getLogger("realtime.connections")


class CampaignConsumer(RealtimeSession):
    protocol_name = "native"

    async def on_connect(self) -> None:
        await self.start_session()

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.write(dumps(frame))

    async def send_error(self, error: ClientError, request_id: Any = None) -> None:
        ERRORS.labels(error.code).inc()
        frame = {"type": "error", "code": error.code, "message": error.message}
        if isinstance(request_id, str):
            frame["request_id"] = request_id
        await self.send_frame(frame)

    async def send_subscribed(self, subscription: Subscription, last_sequence: int) -> None:
        await self.send_frame(
            {"type": "subscribed", **target(subscription), "last_sequence": last_sequence, **self._echo}
        )

    async def send_snapshot(self, subscription: Subscription, snapshot: dict[str, Any], *, resync: bool) -> None:
        frame = {"type": "snapshot", **target(subscription), "snapshot": snapshot}
        if resync:
            frame["resync"] = True
        await self.send_frame(frame)

    # --- frames from the client ----------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.user or not self.user.is_authenticated or self.closing:
            return
        if not await self.check_rate():
            return
        self._echo: dict[str, str] = {}
        request_id = None
        try:
            if text_data is None:
                raise ClientError("bad_request", "Frames must be text (JSON objects).")
            self.check_size(text_data)
            frame = self.parse(text_data)
            request_id = frame.get("request_id")
            if request_id is not None and not isinstance(request_id, str):
                raise ClientError("bad_request", "request_id must be a string.")
            if request_id is not None:
                self._echo = {"request_id": request_id}
            await self.handle(frame)
        except ClientError as error:
            logger.info(
                "ws %s user=%s: %s (%s)", self.connection_id, self.user.get_username(), error.code, error.message
            )
            await self.send_error(error, request_id)
            if error.code == "message_too_large":
                await self.close(CLOSE_TOO_BIG)
        except Exception:
            logger.exception("ws %s user=%s: internal error", self.connection_id, self.user.get_username())
            await self.send_error(ClientError("internal_error"), request_id)

    @staticmethod
    def parse(text: str) -> dict[str, Any]:
        try:
            frame = json.loads(text)
        except RecursionError:
            raise ClientError("bad_request", "Frames must not nest that deeply.") from None
        except ValueError:
            raise ClientError("bad_request", "Frames must be JSON objects; this one is not valid JSON.") from None
        if not isinstance(frame, dict):
            raise ClientError("bad_request", "Frames must be JSON objects.")
        if not isinstance(frame.get("type"), str):
            raise ClientError("bad_request", 'Every frame needs a "type" string.')
        return frame

    async def handle(self, frame: dict[str, Any]) -> None:
        handler = getattr(self, f"on_{frame['type']}", None) if frame["type"] in COMMANDS else None
        if handler is None:
            raise ClientError("unknown_type", f"Unknown frame type {frame['type'][:40]!r}.")
        await handler(frame)

    async def on_subscribe(self, frame: dict[str, Any]) -> None:
        if "stream" in frame:
            await self.subscribe_stream(frame["stream"], frame.get("last_sequence"))
            return
        if "campaign_id" not in frame:
            raise ClientError("bad_request", "subscribe needs a campaign_id (or a stream).")
        await self.subscribe(frame["campaign_id"], frame.get("last_sequence"))

    async def on_unsubscribe(self, frame: dict[str, Any]) -> None:
        key = "stream" if "stream" in frame else "campaign_id"
        name = frame.get(key)
        if not isinstance(name, str):
            raise ClientError("bad_request", "unsubscribe needs a campaign_id (or a stream) string.")
        if ((key == "campaign_id") == (name in STREAMS)) or not await self.drop_subscription(name):
            raise ClientError("not_found", f"Not subscribed to that {'stream' if key == 'stream' else 'campaign'}.")
        await self.send_frame({"type": "unsubscribed", key: name, **self._echo})

    async def on_snapshot(self, frame: dict[str, Any]) -> None:
        if "stream" in frame:
            log = await self.visible_stream(frame["stream"])
            snapshot = await self.log_snapshot(log)
            await self.send_frame({"type": "snapshot", "stream": log.name, "snapshot": snapshot, **self._echo})
            return
        campaign = await self.visible_campaign(frame.get("campaign_id"))
        snapshot = await self.snapshot(campaign)
        await self.send_frame(
            {"type": "snapshot", "campaign_id": campaign.public_id, "snapshot": snapshot, **self._echo}
        )

    async def on_cancel(self, frame: dict[str, Any]) -> None:
        run_id = await self.cancel_run(frame.get("run_id"))
        await self.send_frame({"type": "cancellation_ack", "run_id": run_id, **self._echo})

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await self.send_frame({"type": "pong", **self._echo})


COMMANDS = {"subscribe", "unsubscribe", "snapshot", "cancel", "ping"}


def target(subscription: Subscription) -> dict[str, str]:
    """What a frame about a subscription names: its campaign, or its stream."""
    key = "campaign_id" if subscription.log.kind == CAMPAIGN else "stream"
    return {key: subscription.name}
