"""What the sockets count on /metrics (realtime/metrics.py)."""

from __future__ import annotations

import pytest
from django.test import Client

from campaigns.tests.factories import CampaignFactory
from eventlog.publisher import publish_transient
from realtime.tests.sockets import (
    db,
    expect_error,
    insert_silently,
    publish_progress,
    receive_events,
    recv,
    subscribe,
)

pytestmark = pytest.mark.django_db(transaction=True)


async def metric_samples() -> dict[str, float]:
    """Every sample /metrics answers, keyed by its name and labels."""
    response = await db(Client().get)("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


async def test_metrics_count_what_the_connections_do(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    before = await metric_samples()
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await publish_progress(campaign, 1)
    await receive_events(comm, 1)
    await db(insert_silently)(campaign, 2)  # stored but never sent live: a gap
    await publish_progress(campaign, 3)
    await receive_events(comm, 2)
    await db(publish_transient)(campaign, "artifact.chunk", {"artifact_type": "Copy", "chunk": "a", "chunk_index": 0})
    await recv(comm)
    await comm.send_json_to({"type": "snapshot", "campaign_id": campaign.public_id})
    await recv(comm)
    await comm.send_json_to({"type": "dance"})
    await expect_error(comm, "unknown_type")
    after = await metric_samples()

    def grew(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert after['realtime_connections{protocol="native"}'] >= 1
    assert grew('realtime_events_published_total{event="progress"}') == 2  # insert_silently publishes nothing
    assert grew('realtime_events_published_total{event="artifact.chunk"}') == 1
    # 2 (lost live) and 3 (held behind it) come from the log; 1 too if it arrived during the subscribe.
    assert grew('realtime_gap_events_total{action="replayed"}') in (2, 3)
    assert grew('realtime_errors_total{code="unknown_type"}') == 1
    assert grew("realtime_snapshot_seconds_count") == 1
    assert grew("realtime_event_delivery_seconds_count") == 2
    assert grew("realtime_outbound_message_bytes_count") == 2
    assert not any(campaign.public_id in key for key in after)  # campaign ids are never label values
