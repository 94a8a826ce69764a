"""Server-sent events (PROTOCOL.md §10, §11) on the real daphne, read with httpx as any SSE client
does: the snapshot first, ids on durable events only, resume with Last-Event-ID or last_sequence, a
resync snapshot past the log, JSON refusals before the stream, the account stream with an API key,
a revoked key ending the stream, keep-alive comments."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import httpx
import pytest

from accounts.services import account_publish, api_key_create, api_key_revoke
from campaigns.tests.factories import CampaignFactory, UserFactory
from eventlog.publisher import publish, publish_transient
from realtime.tests.sockets import token_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class EventStream:
    """One SSE response read in a thread; ``next()`` gives parsed events (and comments)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.items: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        self.response = self.client.send(self.client.build_request("GET", url, headers=headers), stream=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for line in self.response.iter_lines():
                if line.startswith(":"):
                    self.items.put({"comment": line[1:].strip()})
                elif not line:
                    if fields:
                        self.items.put(fields)
                    fields = {}
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value
        except httpx.HTTPError:
            pass
        self.items.put(None)

    def next(self, timeout: float = 10, *, comments: bool = False) -> dict[str, Any] | None:
        while True:
            item = self.items.get(timeout=timeout)
            if item is None or comments or "comment" not in item:
                return item

    def close(self) -> None:
        self.response.close()
        self.client.close()


@pytest.fixture
def streams():
    opened: list[EventStream] = []

    def open_stream(url: str, **headers: str) -> EventStream:
        stream = EventStream(url, headers)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def auth(user) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


def test_snapshot_first_then_live_events_with_ids_and_chunks_without(start_web, streams):
    server = start_web(ALLOWED_ORIGINS="https://app.example")
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(owner=alice)
    publish(campaign, "progress", {"percentage": 1, "message": "before"})
    stream = streams(
        f"{server.url}/api/campaigns/{campaign.public_id}/stream/", **auth(alice), Origin="https://app.example"
    )
    assert stream.response.status_code == 200
    assert stream.response.headers["access-control-allow-origin"] == "https://app.example"
    assert stream.response.headers["access-control-allow-credentials"] == "true"
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert stream.response.headers["x-accel-buffering"] == "no"
    assert stream.next() == {"retry": "2000"}
    snapshot = stream.next()
    assert snapshot["event"] == "snapshot" and snapshot["id"] == "1", "its position, for EventSource's reconnect"
    assert json.loads(snapshot["data"])["last_event_sequence"] == 1
    publish(campaign, "progress", {"percentage": 2, "message": "live"})
    publish_transient(
        campaign, "artifact.chunk", {"artifact_type": "Copy", "chunk": "Hi", "chunk_index": 0, "is_complete": False}
    )
    live = stream.next()
    assert live["id"] == "2" and live["event"] == "progress"
    data = json.loads(live["data"])
    assert data == {**data, "event": "progress", "campaign_id": campaign.public_id, "sequence": 2}
    assert "type" not in data
    chunk = stream.next()
    assert chunk["event"] == "artifact.chunk" and "id" not in chunk
    assert json.loads(chunk["data"])["after_sequence"] == 2


@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_replays_what_was_missed_then_live(start_web, streams, how):
    server = start_web()
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(owner=alice)
    for n in range(5):
        publish(campaign, "progress", {"percentage": n, "message": "m"})
    url = f"{server.url}/api/campaigns/{campaign.public_id}/stream/"
    headers = auth(alice)
    if how == "header":
        headers["Last-Event-ID"] = "2"
    else:
        url += "?last_sequence=2"
    stream = streams(url, **headers)
    assert stream.next() == {"retry": "2000"}
    replayed = [stream.next() for _ in range(3)]
    assert [e["id"] for e in replayed] == ["3", "4", "5"]
    assert all(json.loads(e["data"])["replayed"] is True for e in replayed)
    publish(campaign, "progress", {"percentage": 9, "message": "live"})
    assert stream.next()["id"] == "6"


def test_a_resume_past_the_log_starts_with_a_resync_snapshot(start_web, streams):
    server = start_web()
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(owner=alice)
    publish(campaign, "progress", {"percentage": 1, "message": "m"})
    stream = streams(
        f"{server.url}/api/campaigns/{campaign.public_id}/stream/", **auth(alice), **{"Last-Event-ID": "40"}
    )
    stream.next()
    snapshot = stream.next()
    assert snapshot["event"] == "snapshot" and json.loads(snapshot["data"])["resync"] is True


def test_refusals_are_json_before_the_stream(start_web):
    server = start_web()
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    campaign = CampaignFactory(owner=alice)
    url = f"{server.url}/api/campaigns/{campaign.public_id}/stream/"
    cases = [
        ({}, 401),
        ({"Authorization": "Bearer nonsense"}, 401),
        (auth(bob), 404),
        ({**auth(alice), "Last-Event-ID": "abc"}, 400),
        ({**auth(alice), "Last-Event-ID": "-3"}, 400),
        ({**auth(alice), "Last-Event-ID": "²".encode()}, 400),
        ({**auth(alice), "Origin": "https://evil.example"}, 403),
    ]
    for headers, status in cases:
        answer = httpx.get(url, headers=headers, timeout=10)
        assert answer.status_code == status, (headers, answer.text)
        assert answer.headers["content-type"] == "application/json" and set(answer.json()) == {"detail"}
    assert (
        httpx.get(f"{server.url}/api/campaigns/camp_nope/stream/", headers=auth(alice), timeout=10).status_code == 404
    )
    assert httpx.get(f"{server.url}/api/campaigns/", headers=auth(alice), timeout=10).status_code == 200, (
        "Django still serves"
    )


def test_the_account_stream_with_an_api_key_ends_when_the_key_is_revoked(start_web, streams):
    server = start_web(REALTIME_KEY_CHECK_SECONDS="0.5")
    alice = UserFactory(username="alice")
    key, secret = api_key_create(user_id=alice.pk, name="sse")
    stream = streams(f"{server.url}/api/account/stream/?access_token={secret}")
    assert stream.response.status_code == 200
    stream.next()
    snapshot = json.loads(stream.next()["data"])
    assert snapshot["stream"] == "account" and snapshot["spend"] == "0.000000"
    account_publish(alice.pk, "run.started", {"campaign_id": "camp_x", "run_id": "run_y", "state": "planning"})
    event = stream.next()
    assert event["event"] == "run.started" and json.loads(event["data"])["stream"] == "account"
    api_key_revoke(key)
    started = time.monotonic()
    error = stream.next()
    assert error["event"] == "stream.error" and json.loads(error["data"])["message"] == "This API key was revoked."
    assert stream.next() is None, "the response ended"
    assert time.monotonic() - started < 5


def test_keep_alive_comments(start_web, streams):
    server = start_web(WS_PING_INTERVAL_SECONDS="1")
    alice = UserFactory(username="alice")
    stream = streams(f"{server.url}/api/account/stream/", **auth(alice))
    stream.next()
    stream.next()
    assert stream.next(comments=True) == {"comment": "keep-alive"}


def test_a_slow_sse_reader_is_cut_off_and_the_others_are_unaffected(start_web, streams):
    import socket

    server = start_web(WS_OUTBOUND_BUFFER_BYTES="32768", WS_SLOW_CLIENT_SECONDS="2")
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(owner=alice)
    url = f"/api/campaigns/{campaign.public_id}/stream/"
    fast = streams(f"{server.url}{url}", **auth(alice))
    fast.next()
    fast.next()
    # The slow reader sends its request and never reads: a 4 KB receive buffer fills, then the server's.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", server.port))
    slow.sendall(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token_for(alice)}\r\n\r\n".encode())
    deadline = time.monotonic() + 10
    while "sse" not in server.log().split("connected: user=alice")[-1] and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the server's log until the slow stream is open, bounded by the deadline
    for i in range(200):  # durable events cannot be shed: 200 of 60 KB outgrow every buffer
        publish(campaign, "progress", {"percentage": i % 100, "message": "y" * 60_000})
    received = [int(fast.next(timeout=30)["id"]) for _ in range(200)]
    assert received == list(range(1, 201)), "the fast reader got every event, in order"
    deadline = time.monotonic() + 30
    while "closed with 1013" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.2)  # polling the server's log for the slow client's cut-off, bounded by the deadline
    assert "closed with 1013" in server.log()
    slow.settimeout(30)
    try:
        while slow.recv(65536):  # what was buffered, then the end (or a reset): never all 200 events
            pass
    except ConnectionResetError:
        pass
    slow.close()
