"""Webhooks: made and changed by their owner, fed by the event log, delivered one at a time per webhook.

A delivery row is written in the transaction that publishes the event (the publisher's listener), so
an event is never stored without its deliveries, and a rolled-back one has none. After commit a task
delivers the webhook's queue: the worker takes the webhook's lease, POSTs the oldest pending delivery,
records the outcome, and goes on to the next only once that one is delivered or has failed for good:
in order per webhook, at least once. A failure waits WEBHOOK_RETRY_DELAYS before the next attempt; a
short wait is a Celery countdown, a long one is picked up by the scheduler's sweep (``deliver_due``),
which also restarts any queue whose task was lost.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import secrets
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from standardwebhooks import Webhook as Signer

from accounts.services import account_publish
from campaigns.errors import ServiceError
from webhooks.models import DeliveryStatus, Webhook, WebhookDelivery

logger = logging.getLogger(__name__)

# What a webhook may ask for: the durable events of PROTOCOL.md §7 and §11 (chunks are transient;
# webhook.* would feed itself), and the test event.
CAMPAIGN_EVENTS = (
    "campaign.started",
    "orchestration.state_changed",
    "step.started",
    "step.completed",
    "agent.thought",
    "progress",
    "artifact.generated",
    "checkpoint.created",
    "approval.required",
    "approval.resolved",
    "compliance.completed",
    "usage.updated",
    "campaign.completed",
    "generation.failed",
    "run.cancelled",
    "plan.created",
    "plan.completed",
    "agent.message",
    "tool.completed",
    "run.queued",
)
ACCOUNT_EVENTS = ("run.started", "run.completed", "run.failed", "spend.updated", "budget.alert")
EVENTS = CAMPAIGN_EVENTS + tuple(e for e in ACCOUNT_EVENTS if e not in CAMPAIGN_EVENTS)
TEST_EVENT = "webhook.test"
LEASE_SECONDS = 60
COUNTDOWN_LIMIT_SECONDS = 60  # longer waits are left to the sweep (a Redis broker redelivers long ETAs)
RESPONSE_KEPT_BYTES = 1024
USER_AGENT = "marketing-agents-webhooks/1"


# --- the owner's side ----------------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def url_refusal(url: str) -> str:
    """Why a webhook may not POST to ``url`` (not http(s), no host, a private or loopback address
    unless WEBHOOKS_ALLOW_PRIVATE), or ''. Checked when the webhook is saved and before each attempt
    (the name may resolve elsewhere by then)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "The URL must be http:// or https:// with a host."
    try:
        httpx.URL(url)  # what the client will send to: it must be able to
    except (httpx.InvalidURL, ValueError):
        return "The URL is not one a request can be sent to."
    if settings.WEBHOOKS_ALLOW_PRIVATE:
        return ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)}
    except (OSError, ValueError, UnicodeError):
        return f"The host {parts.hostname[:100]!r} cannot be resolved."
    for address in addresses:
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            return "The URL resolves to a loopback, private or reserved address; webhooks go to public addresses only."
    return ""


def _check(url: str, events: list[str]) -> None:
    refusal = url_refusal(url)
    if refusal:
        raise ServiceError(refusal)
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise ServiceError(f"Unknown events: {', '.join(e[:64] for e in unknown[:5])}; see PROTOCOL.md §7 and §11.")


def webhook_create(*, user_id: int, url: str, events: list[str], description: str = "") -> Webhook:
    _check(url, events)
    return Webhook.objects.create(
        user_id=user_id, url=url, events=sorted(set(events)), description=description, secret=new_secret()
    )


def webhook_update(webhook: Webhook, **changes: Any) -> Webhook:
    url, events = changes.get("url", webhook.url), changes.get("events", webhook.events)
    _check(url, events)
    for field, value in changes.items():
        setattr(webhook, field, sorted(set(value)) if field == "events" else value)
    webhook.save(update_fields=[*changes])
    return webhook


def webhook_test(webhook: Webhook) -> WebhookDelivery:
    """A ``webhook.test`` delivery, queued behind the webhook's others."""
    payload = {"event": TEST_EVENT, "webhook_id": webhook.public_id, "emitted_at": timezone.now().isoformat()}
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(webhook=webhook, event=TEST_EVENT, payload=payload)
        _deliver_after_commit(webhook.pk)
    return delivery


def redeliver(delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again (an operator's action): a new delivery at the end of the queue, with the
    same message id, so a receiver that kept the first can tell it is the same message."""
    with transaction.atomic():
        again = WebhookDelivery.objects.create(
            webhook=delivery.webhook, event=delivery.event, message_id=delivery.message_id, payload=delivery.payload
        )
        _deliver_after_commit(delivery.webhook_id)
    return again


# --- from the event log ----------------------------------------------------------------------------------------


def payload_of(frame: dict[str, Any]) -> dict[str, Any]:
    """The event as ``GET …/events/`` shows it, plus ``campaign_id`` (an account event's, if it has one)."""
    payload = {key: value for key, value in frame.items() if key != "type"}
    payload.setdefault("campaign_id", (frame.get("data") or {}).get("campaign_id"))
    return payload


def on_event(owner_id: int, frame: dict[str, Any]) -> None:
    """The publisher's listener: a delivery for each of the owner's webhooks that asked for the event.
    An account event that the campaign's log also has (``run.cancelled``) is delivered once, from
    the campaign's. A failure here is logged and never fails the publish (in a savepoint)."""
    event = frame.get("event", "")
    if event not in EVENTS or ("stream" in frame and event in CAMPAIGN_EVENTS):
        return
    rows = Webhook.objects.filter(user_id=owner_id, active=True).only("pk", "events")  # one query per event
    hooks = [w for w in rows if isinstance(w.events, list) and event in w.events]
    if not hooks:
        return
    try:
        with transaction.atomic():
            payload = payload_of(frame)
            WebhookDelivery.objects.bulk_create(WebhookDelivery(webhook=w, event=event, payload=payload) for w in hooks)
    except Exception:
        logger.exception("webhook deliveries for a %s event could not be written", event)
        return
    for webhook in hooks:
        _deliver_after_commit(webhook.pk)


def _deliver_after_commit(webhook_pk: int, countdown: float = 0) -> None:
    transaction.on_commit(lambda: queue_delivery(webhook_pk, countdown))


def queue_delivery(webhook_pk: int, countdown: float = 0) -> None:
    from webhooks.tasks import deliver

    try:
        deliver.apply_async((webhook_pk,), countdown=countdown)
    except Exception as exc:  # the broker is down: the sweep starts this queue later
        logger.warning("queueing webhook delivery failed (%s); the sweep will deliver it", type(exc).__name__)


# --- delivering ----------------------------------------------------------------------------------------------


def _claim(webhook_pk: int) -> str | None:
    """Take the webhook's lease; returns its token (None if another worker holds it). Renewing and
    giving it up name the token, so a worker whose lease ran out cannot end another's."""
    now, token = timezone.now(), secrets.token_hex(8)
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    claimed = Webhook.objects.filter(free, pk=webhook_pk, active=True).update(
        lease_until=now + timedelta(seconds=LEASE_SECONDS), lease_token=token
    )
    return token if claimed else None


def _renew(webhook_pk: int, token: str) -> bool:
    until = timezone.now() + timedelta(seconds=LEASE_SECONDS)
    return bool(Webhook.objects.filter(pk=webhook_pk, lease_token=token).update(lease_until=until))


def _release(webhook_pk: int, token: str) -> None:
    Webhook.objects.filter(pk=webhook_pk, lease_token=token).update(lease_until=None, lease_token="")


def _due_head(webhook_pk: int) -> WebhookDelivery | None:
    return WebhookDelivery.objects.filter(webhook_id=webhook_pk, status=DeliveryStatus.PENDING).order_by("id").first()


def webhook_deliver(webhook_pk: int) -> int:
    """Deliver the webhook's queue in order while its head is due; returns how many attempts were made."""
    attempts = 0
    while (token := _claim(webhook_pk)) is not None:
        try:
            while (head := _due_head(webhook_pk)) is not None:
                if head.next_attempt_at and head.next_attempt_at > timezone.now():
                    wait = (head.next_attempt_at - timezone.now()).total_seconds()
                    if wait <= COUNTDOWN_LIMIT_SECONDS:
                        queue_delivery(webhook_pk, countdown=wait)
                    return attempts
                _attempt(head)
                attempts += 1
                if not _renew(webhook_pk, token):
                    return attempts  # the lease ran out during a slow attempt; its new holder goes on
        finally:
            _release(webhook_pk, token)
        # A delivery made while the lease was being given up found it held: look once more.
        head = _due_head(webhook_pk)
        if head is None or (head.next_attempt_at and head.next_attempt_at > timezone.now()):
            return attempts
    return attempts


def deliver_due() -> int:
    """The sweep: queue every active webhook with a due pending delivery and no worker on it."""
    now = timezone.now()
    due = (
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, webhook__active=True)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .filter(Q(webhook__lease_until__isnull=True) | Q(webhook__lease_until__lt=now))
        .values_list("webhook_id", flat=True)
        .distinct()
    )
    webhooks = list(due)
    for webhook_pk in webhooks:
        queue_delivery(webhook_pk)
    return len(webhooks)


def body_of(delivery: WebhookDelivery) -> str:
    """The JSON body; one over WEBHOOK_MAX_BODY_BYTES goes without its ``data`` (read it from the
    events endpoint), marked ``"truncated": true``."""
    body = json.dumps(delivery.payload, separators=(",", ":"))
    if len(body.encode()) <= settings.WEBHOOK_MAX_BODY_BYTES:
        return body
    slim = {key: value for key, value in delivery.payload.items() if key != "data"}
    return json.dumps({**slim, "data": None, "truncated": True}, separators=(",", ":"))


_client: httpx.Client | None = None
_client_pid: int | None = None


def _http() -> httpx.Client:
    """One HTTP client per worker process (made again after a fork): a new client per attempt
    costs a TLS context and a connection, most of an attempt's CPU."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = httpx.Client(follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=20))
        _client_pid = os.getpid()
    return _client


def _post(webhook: Webhook, delivery: WebhookDelivery) -> tuple[int | None, str]:
    """One attempt: (status code or None, error or '')."""
    refusal = url_refusal(webhook.url)
    if refusal:
        return None, refusal
    body = body_of(delivery)
    sent_at = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery.message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": Signer(webhook.secret).sign(delivery.message_id, sent_at, body),
    }
    timeout = settings.WEBHOOK_TIMEOUT_SECONDS
    started = time.monotonic()
    try:
        with _http().stream("POST", webhook.url, content=body.encode(), headers=headers, timeout=timeout) as response:
            kept = b""
            for piece in response.iter_bytes():  # read a little of the answer, never all of it
                kept += piece
                if len(kept) >= RESPONSE_KEPT_BYTES or time.monotonic() - started > timeout:
                    break  # (a receiver dripping its answer gets no more time than a silent one)
            code = response.status_code
    except httpx.TimeoutException:
        return None, f"The receiver did not answer within {timeout:g} s."
    except httpx.HTTPError as exc:
        return None, f"The request failed: {type(exc).__name__}."
    except Exception as exc:  # an URL the client refuses after all, an encoding error: a failed attempt
        logger.warning("webhook %s: the request could not be made (%s)", webhook.public_id, type(exc).__name__)
        return None, "The request could not be made."
    if 200 <= code < 300:
        return code, ""
    return code, f"The receiver answered {code}."


def _attempt(delivery: WebhookDelivery) -> None:
    webhook = delivery.webhook
    try:
        code, error = _post(webhook, delivery)
    except Exception as exc:  # whatever happens, the attempt is counted (no head is retried forever)
        logger.warning("webhook %s: attempt failed (%s)", webhook.public_id, type(exc).__name__)
        code, error = None, "The request could not be made."
    attempt = delivery.attempts + 1
    delays = settings.WEBHOOK_RETRY_DELAYS
    report = {
        "webhook_id": webhook.public_id,
        "delivery_id": delivery.public_id,
        "event": delivery.event,
        "status_code": code,
        "attempt": attempt,
        "error": error or None,
    }
    fields: dict[str, Any] = {"attempts": attempt, "status_code": code, "last_error": error[:500]}
    if not error:
        fields.update(status=DeliveryStatus.DELIVERED, delivered_at=timezone.now(), next_attempt_at=None)
        event, data = "webhook.delivered", report
    elif attempt <= len(delays):
        fields.update(next_attempt_at=timezone.now() + timedelta(seconds=delays[attempt - 1]))
        event, data = "webhook.failed", {**report, "will_retry": True}
    else:
        fields.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
        event, data = "webhook.failed", {**report, "will_retry": False}
    with transaction.atomic():
        # Only if nobody recorded this attempt meanwhile (a worker whose lease ran out mid-attempt).
        recorded = WebhookDelivery.objects.filter(
            pk=delivery.pk, status=DeliveryStatus.PENDING, attempts=delivery.attempts
        ).update(**fields)
        if recorded:
            account_publish(webhook.user_id, event, data)
    logger.info("webhook %s delivery %s attempt %d: %s", webhook.public_id, delivery.public_id, attempt, error or code)
