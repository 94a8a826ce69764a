"""Load client for the campaign WebSocket (or, with --transport sse, the server-sent event stream;
signalr, the SignalR hub's JSON protocol; signalr-stateful, the same with stateful reconnect, acking
once a second as @microsoft/signalr does): one asyncio process holding N connections.

Connection i subscribes to campaign i % M. Control over stdin/stdout (driven by bench/run.py):
  prints READY {json}         when all N are subscribed
  reads  DRAIN {json}         the publisher's per-campaign counts; reads until every connection has
                              them all (or --drain-timeout), then prints RESULT {json}
  reads  SNAPSHOT n           n snapshot requests on one connection, prints SNAPSHOTS {json}
  reads  DROP                 close every connection (as when their web process dies): DROPPED {}
  reads  GONE                 wait until every connection was closed by its (killed) server: GONE {json}
  reads  REATTACH k [URLS]    every connection comes back at once (to URLS if given) with its last_sequence, while k
                              events per campaign were published meanwhile (the parent did it);
                              prints REATTACHED {json} once each has replayed its k
  reads  EXIT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from realtime.payloads import parse_emitted_at as emitted  # noqa: E402  (no Django in that module)


class Stats:
    def __init__(self, n: int) -> None:
        self.latency: list[float] = []
        self.received_at: list[float] = []
        self.last = [0] * n
        self.unique = [0] * n
        self.gaps = 0
        self.dups = 0
        self.closed = 0


SEQUENCE = '"sequence":'
TRANSPORT = ["ws"]  # --transport: "ws", "sse", "signalr" or "signalr-stateful"
RS = "\x1e"


class SseStream:
    """A GET of /api/campaigns/{id}/stream/ on a raw asyncio connection (no HTTP library in the way:
    the client must not be the bottleneck). Iterating gives each ``data:`` line's JSON text, which is
    the socket's frame without ``type``; ``sequence`` is found in it the same way."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str, campaign: str, last_sequence: int | None) -> SseStream:
        parts = urlsplit(url)
        token = parse_qs(parts.query)["access_token"][0]
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=2**22)
        query = "" if last_sequence is None else f"?last_sequence={last_sequence}"
        writer.write(
            f"GET /api/campaigns/{campaign}/stream/{query} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(status.decode(errors="replace"))
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return cls(reader, writer)

    def __aiter__(self) -> SseStream:
        return self

    async def __anext__(self) -> str:
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionClosed(None, None)
            if line.startswith(b"data: "):
                return line[6:].decode()

    async def recv(self) -> str:
        return await self.__anext__()

    async def close(self) -> None:
        self.writer.close()


class HubStream:
    """A SignalR hub connection (JSON protocol) subscribed with SubscribeToCampaign: iterating gives
    each record's text; events are ReceiveOrchestrationEvent calls, whose ``sequence`` is found the
    same way. Stateful, it counts the numbered messages it gets and acks them once a second."""

    def __init__(self, ws, stateful: bool) -> None:
        self.ws, self.stateful = ws, stateful
        self.records: list[str] = []
        self.numbered, self.acked, self.acked_at = 0, 0, time.monotonic()

    @classmethod
    async def open(cls, url: str, campaign: str, last_sequence: int | None, stateful: bool) -> HubStream:
        parts = urlsplit(url)
        token = parse_qs(parts.query)["access_token"][0]
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        query = "negotiateVersion=1" + ("&useStatefulReconnect=true" if stateful else "")
        writer.write(
            f"POST /hubs/campaign/negotiate?{query} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        answer = json.loads((await reader.read()).split(b"\r\n\r\n", 1)[1])
        writer.close()
        assert answer.get("useStatefulReconnect", False) is stateful, answer
        hub_url = (
            f"ws://{parts.hostname}:{parts.port}/hubs/campaign?id={answer['connectionToken']}&access_token={token}"
        )
        ws = await connect(hub_url, max_size=None, compression=None, open_timeout=60, ping_interval=None)
        await ws.send(json.dumps({"protocol": "json", "version": 2 if stateful else 1}) + RS)
        assert await ws.recv() == "{}" + RS
        stream = cls(ws, stateful)
        arguments = [campaign] if last_sequence is None else [campaign, last_sequence]
        await ws.send(
            json.dumps({"type": 1, "invocationId": "1", "target": "SubscribeToCampaign", "arguments": arguments}) + RS
        )
        async for record in stream:
            if record.startswith('{"type":3'):
                assert "error" not in record, record
                return stream
        raise ConnectionClosed(None, None)

    def __aiter__(self) -> HubStream:
        return self

    async def __anext__(self) -> str:
        while not self.records:
            self.records = (await self.ws.recv()).split(RS)[:-1]
        record = self.records.pop(0)
        if self.stateful and (record.startswith('{"type":1,') or record.startswith('{"type":3,')):
            self.numbered += 1
            if time.monotonic() - self.acked_at >= 1.0:
                self.acked_at = time.monotonic()
                await self.ws.send(json.dumps({"type": 8, "sequenceId": self.numbered}) + RS)
        return record

    async def recv(self) -> str:
        return await self.__anext__()

    async def close(self) -> None:
        await self.ws.close()


EVENT_PREFIX = ['{"type":"event"']  # '{"event"' over SSE (the frame without "type")
SAMPLE_EVERY = 10  # latency is parsed from one frame in ten: the client must not be the bottleneck


async def reader(i: int, ws, stats: Stats, record: list[bool]) -> None:
    count = 0
    try:
        async for text in ws:
            at = text.find(SEQUENCE)
            if at < 0 or not text.startswith(EVENT_PREFIX[0]):
                continue
            now = time.time()
            end = text.find(",", at)
            sequence = int(text[at + len(SEQUENCE) : end])
            if sequence > stats.last[i]:
                if sequence != stats.last[i] + 1:
                    stats.gaps += sequence - stats.last[i] - 1
                stats.last[i] = sequence
                stats.unique[i] += 1
                if record[0]:
                    stats.received_at.append(now)
                    count += 1
                    if count % SAMPLE_EVERY == 0:
                        stats.latency.append(now - emitted(text.replace('"emittedAt":', '"emitted_at":', 1)))
            else:
                stats.dups += 1
    except ConnectionClosed:
        stats.closed += 1


async def open_one(url: str, campaign: str, sem: asyncio.Semaphore, last_sequence: int | None = None):
    subscribe = {"type": "subscribe", "campaign_id": campaign}
    if last_sequence is not None:
        subscribe["last_sequence"] = last_sequence
    async with sem:
        for attempt in range(5):
            try:
                if TRANSPORT[0] == "sse":
                    stream = await SseStream.open(url, campaign, last_sequence)
                    if last_sequence is None:
                        await stream.recv()  # the snapshot comes first
                    return stream
                if TRANSPORT[0].startswith("signalr"):
                    return await HubStream.open(url, campaign, last_sequence, TRANSPORT[0] == "signalr-stateful")
                ws = await connect(url, max_size=None, compression=None, open_timeout=60, ping_interval=None)
                await ws.send(json.dumps(subscribe))
                answer = json.loads(await ws.recv())
                assert answer["type"] == "subscribed", answer
                return ws
            except Exception:  # refused, reset or timed out under the connection storm: try again
                await asyncio.sleep(0.5 * (attempt + 1))
        raise RuntimeError("could not connect")


def url_of(urls: str, i: int) -> str:
    """Connection i goes to web process i % N (``--url`` lists them, comma-separated)."""
    listed = urls.split(",")
    return listed[i % len(listed)]


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="the web processes' URLs, comma-separated")
    parser.add_argument("--campaigns", required=True, help="comma-separated campaign ids")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--drain-timeout", type=float, default=30)
    parser.add_argument("--transport", choices=["ws", "sse", "signalr", "signalr-stateful"], default="ws")
    args = parser.parse_args()
    TRANSPORT[0] = args.transport
    if args.transport == "sse":
        EVENT_PREFIX[0] = '{"event"'
    elif args.transport.startswith("signalr"):
        EVENT_PREFIX[0] = '{"type":1,"target":"ReceiveOrchestrationEvent"'
    campaigns = args.campaigns.split(",")
    stats, record = Stats(args.clients), [False]
    sem = asyncio.Semaphore(100)
    started = time.time()
    sockets = await asyncio.gather(
        *(open_one(url_of(args.url, i), campaigns[i % len(campaigns)], sem) for i in range(args.clients))
    )
    readers = [asyncio.ensure_future(reader(i, ws, stats, record)) for i, ws in enumerate(sockets)]
    print("READY " + json.dumps({"connected": len(sockets), "seconds": round(time.time() - started, 2)}), flush=True)
    loop = asyncio.get_running_loop()
    read = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(read), sys.stdin)
    record[0] = True
    while True:
        line = (await read.readline()).decode().strip()
        if not line or line == "EXIT":
            break
        command, _, rest = line.partition(" ")
        if command == "DRAIN":
            print("RESULT " + json.dumps(await drain(json.loads(rest), campaigns, stats, args)), flush=True)
        elif command == "SNAPSHOT":
            print("SNAPSHOTS " + json.dumps(await snapshots(url_of(args.url, 0), campaigns[0], int(rest))), flush=True)
        elif command == "DROP":
            for task in readers:
                task.cancel()
            await asyncio.gather(*(ws.close() for ws in sockets))
            print("DROPPED {}", flush=True)
        elif command == "GONE":  # their web process was killed: wait until every connection has seen it
            deadline = time.time() + 30
            while stats.closed < args.clients and time.time() < deadline:
                await asyncio.sleep(0.05)
            print("GONE " + json.dumps({"closed": stats.closed}), flush=True)
        elif command == "REATTACH":  # REATTACH k [urls]: to other web processes, if given
            gap, _, urls = rest.partition(" ")
            result, sockets = await reattach(urls or args.url, campaigns, stats, int(gap), args.clients)
            readers = [asyncio.ensure_future(reader(i, ws, stats, record)) for i, ws in enumerate(sockets)]
            print("REATTACHED " + json.dumps(result), flush=True)
    for task in readers:
        task.cancel()
    for ws in sockets:
        await ws.close()


async def drain(summary: dict, campaigns: list[str], stats: Stats, args) -> dict:
    window = summary["window"]
    expected = [summary["counts"].get(campaigns[i % len(campaigns)], 0) for i in range(args.clients)]
    deadline = time.time() + args.drain_timeout
    while time.time() < deadline and any(u < e for u, e in zip(stats.unique, expected, strict=True)):
        await asyncio.sleep(0.1)
    in_window = [t for t in stats.received_at if window[0] <= t <= window[1] + 0.5]
    duration = max(window[1] - window[0], 1e-9)
    return {
        "frames_received": sum(stats.unique),
        "frames_expected": sum(expected),
        "frames_per_second_in_window": round(len(in_window) / (duration + 0.5)),
        "latency_ms": {
            q: round(pct(stats.latency, p) * 1000, 2) for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        },
        "missed": sum(max(0, e - u) for u, e in zip(stats.unique, expected, strict=True)),
        "duplicates": stats.dups,
        "live_gaps_seen": stats.gaps,
        "closed": stats.closed,
        "caught_up_seconds_after_window": round(max(stats.received_at, default=window[1]) - window[1], 3),
    }


async def reattach(url: str, campaigns: list[str], stats: Stats, gap: int, clients: int) -> tuple[dict, list]:
    """All connections come back at once (no semaphore: a storm), each resuming from the last
    sequence it had; the time from the start until each has received the ``gap`` events it missed."""
    started, cpu = time.perf_counter(), time.process_time()
    caught_up = [0.0] * clients
    replayed = [0] * clients
    dups = [0]

    async def one(i: int):
        target = stats.last[i] + gap
        ws = await open_one(url_of(url, i), campaigns[i % len(campaigns)], asyncio.Semaphore(1), stats.last[i])
        while stats.last[i] < target:
            text = await ws.recv()
            at = text.find(SEQUENCE)
            if at < 0 or not text.startswith(EVENT_PREFIX[0]):
                continue
            sequence = int(text[at + len(SEQUENCE) : text.find(",", at)])
            if sequence != stats.last[i] + 1:
                dups[0] += 1
                continue
            stats.last[i] = sequence
            replayed[i] += 1
        caught_up[i] = time.perf_counter() - started
        return ws

    sockets = await asyncio.gather(*(one(i) for i in range(clients)))
    return {
        "clients": clients,
        "gap_events_each": gap,
        "replayed": sum(replayed),
        "out_of_order_or_duplicate": dups[0],
        "all_caught_up_seconds": round(max(caught_up), 3),
        "caught_up_seconds": {q: round(pct(caught_up, p), 3) for q, p in (("p50", 0.5), ("p99", 0.99))},
        "load_client_cpu_seconds": round(time.process_time() - cpu, 2),  # the client can be the limit
    }, sockets


async def snapshots(url: str, campaign: str, count: int) -> dict:
    """Round trips of the snapshot frame on a connection of its own (no subscription on it)."""
    times = []
    async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        for i in range(count):
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "snapshot", "campaign_id": campaign, "request_id": str(i)}))
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("type") in ("snapshot", "error") and frame.get("request_id") == str(i):
                    break
            times.append(time.perf_counter() - started)
            # Stay under the 100 frames/s limit per connection (rate_limited frames are not answered).
            await asyncio.sleep(max(0.0, 0.012 - (time.perf_counter() - started)))
    return {q: round(pct(times, p) * 1000, 2) for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
