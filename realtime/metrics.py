"""Prometheus metrics (PROTOCOL.md §8), shared by the web processes and the workers.

In multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the settings) every process writes its own
files and ``/metrics`` adds them up, so a counter incremented in a Celery worker shows up in the
web process's answer. Campaign ids are never label values: their number is unbounded.
"""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SIZE_BUCKETS = (128, 256, 512, 1024, 2048, 4096, 16384, 65536, 262144)

CONNECTIONS = Gauge("realtime_connections", "Open WebSocket connections.", ["protocol"], multiprocess_mode="livesum")
SUBSCRIPTIONS = Gauge(
    "realtime_subscriptions", "Campaign subscriptions on open connections.", ["protocol"], multiprocess_mode="livesum"
)
DELIVERY_LATENCY = Histogram(
    "realtime_event_delivery_seconds",
    "From an event's emitted_at to its frame written to the sockets of a process.",
    buckets=LATENCY_BUCKETS,
)
# Observed once per event per web process, not per socket write: the fan-out path stays free of
# per-connection bookkeeping. Event frames are ASCII JSON, so characters are bytes.
OUTBOUND_SIZE = Histogram(
    "realtime_outbound_message_bytes", "Size of the event frames fanned out to clients.", buckets=SIZE_BUCKETS
)
RECONNECTIONS = Counter("realtime_resumed_subscriptions", "Subscriptions resumed with last_sequence.")
SNAPSHOT_LATENCY = Histogram("realtime_snapshot_seconds", "Time to build a campaign snapshot.", buckets=LATENCY_BUCKETS)
ERRORS = Counter("realtime_errors", "Error frames sent to clients, by code.", ["code"])
GAP_EVENTS = Counter(
    "realtime_gap_events", "Durable events replayed from the log to close a gap, or dropped as duplicates.", ["action"]
)
GAP_FILLS = Counter(
    "realtime_gap_fills",
    "Catch-ups that replayed events from the log, by what started them: a sequence jump seen live "
    "(live_skip), the periodic head check (head_check), a client's last_sequence (resume), the channel "
    "layer reconnecting (layer_reconnect), a congested connection draining (drained).",
    ["cause"],
)
LAYER_RECONNECTS = Counter("realtime_layer_reconnects", "Times a web process's channel-layer connection came back.")
HEAD_CHECKS = Counter("realtime_head_checks", "Head checks run (one database query per web process per interval).")
CHUNKS_SHED = Counter("realtime_chunks_shed", "Transient chunks merged or dropped under backpressure.", ["action"])
SLOW_CLIENTS_CLOSED = Counter("realtime_slow_clients_closed", "Connections closed with 1013 for falling behind.")
INTERNALS_BROKEN = Counter(
    "server_internals_broken",
    "A private daphne/Twisted/autobahn field the server relies on was missing (backpressure, frame "
    "limits): non-zero means an upgrade broke it (marketing_agents.serve.check_internals).",
    ["probe"],
)
AUTH_FAILURES = Counter("realtime_auth_failures", "WebSocket handshakes or connections refused.", ["reason"])


def metrics_view(request: HttpRequest) -> HttpResponse:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:  # pragma: no cover - the settings always set the directory
        from prometheus_client import REGISTRY as registry
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
