"""Delivery to a subscription (realtime/delivery.py): gaps filled from the log, duplicates dropped,
long replays paged, transient chunks placed and never replayed.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.tests.factories import CampaignFactory, RunFactory
from eventlog.models import CampaignEvent
from eventlog.publisher import group_name, publish_transient
from realtime.fanout import get_fanout
from realtime.tests.sockets import (
    db,
    expect_silence,
    hub_layer,
    insert_silently,
    layer_message,
    publish_progress,
    receive_events,
    subscribe,
)

pytestmark = pytest.mark.django_db(transaction=True)


# --- gap filling --------------------------------------------------------------------------------------------


async def test_a_lost_layer_message_is_filled_from_the_log(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await publish_progress(campaign, 1)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [1]

    lost = await db(insert_silently)(campaign, 2)
    assert lost.sequence == 2
    await expect_silence(comm, 0.3)  # nothing announced it
    await publish_progress(campaign, 3)
    missing, live = await receive_events(comm, 2)
    assert [missing["sequence"], live["sequence"]] == [2, 3]
    assert missing["replayed"] is True
    assert missing["data"] == {"percentage": 2, "message": "lost on the way"}
    assert live["data"]["percentage"] == 3
    await expect_silence(comm)


async def test_a_stranded_event_arrives_without_any_later_event(ws, users, settings):
    """Its layer message was lost and nothing follows it (the run's last event, say): the head check
    finds the subscription behind and fills it from the log."""
    from realtime.metrics import GAP_FILLS

    settings.REALTIME_HEAD_CHECK_SECONDS = 0.1
    before = GAP_FILLS.labels("head_check")._value.get()
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await publish_progress(campaign, 1)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [1]
    await db(insert_silently)(campaign, 2)
    [stranded] = await receive_events(comm, 1, timeout=10)
    assert stranded["sequence"] == 2 and stranded["replayed"] is True
    assert GAP_FILLS.labels("head_check")._value.get() == before + 1
    await expect_silence(comm)


def test_one_query_reads_the_heads_of_every_subscribed_campaign(users, django_assert_num_queries):
    from eventlog.reads import campaign_log, read_heads

    campaigns = [CampaignFactory(owner=users["alice"]) for _ in range(5)]
    for campaign in campaigns[:2]:
        insert_silently(campaign, 1)
    logs = [campaign_log(c) for c in campaigns]
    with django_assert_num_queries(1):
        heads = read_heads(logs)
    assert heads == {log: (1 if i < 2 else 0) for i, log in enumerate(logs)}


async def test_several_lost_messages_are_filled_in_order(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    for percentage in (1, 2, 3):
        await db(insert_silently)(campaign, percentage)
    await publish_progress(campaign, 4, 5)
    frames = await receive_events(comm, 5)
    assert [f["sequence"] for f in frames] == [1, 2, 3, 4, 5]
    assert all(f.get("replayed") is True for f in frames[:3])
    await expect_silence(comm)


async def test_a_duplicate_layer_message_is_not_delivered_twice(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    [stored] = await publish_progress(campaign, 1)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [1]

    message = layer_message(campaign, stored)
    await get_fanout().dispatch(dict(message))  # the same message handed to the hub again
    await hub_layer().group_send(group_name(campaign.public_id), dict(message))  # and through Redis
    await expect_silence(comm, 0.5)

    await publish_progress(campaign, 2)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [2]
    await expect_silence(comm)


async def test_a_message_ahead_of_the_log_is_not_delivered_before_its_predecessors(ws, users):
    """A layer message for a sequence the log does not have yet must not jump the queue."""
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    [first] = await publish_progress(campaign, 1)
    await receive_events(comm, 1)
    ahead = layer_message(campaign, first)
    ahead["sequence"] = 3
    ahead["frame"] = ahead["frame"].replace('"sequence":1', '"sequence":3')
    await get_fanout().dispatch(ahead)
    await publish_progress(campaign, 2)
    frames = await receive_events(comm, 1)
    assert [f["sequence"] for f in frames] == [2]
    await publish_progress(campaign, 3)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [3]
    await expect_silence(comm)


async def test_a_chunk_placed_after_a_lost_event_comes_after_it(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await db(insert_silently)(campaign, 1)
    chunk_data = {"artifact_type": "Copy", "chunk": "Hello", "chunk_index": 0, "is_complete": False}
    await db(publish_transient)(campaign, "artifact.chunk", chunk_data)
    missing, chunk = await receive_events(comm, 2)
    assert missing["sequence"] == 1 and missing["replayed"] is True
    assert chunk["event"] == "artifact.chunk" and chunk["after_sequence"] == 1 and "sequence" not in chunk
    await publish_progress(campaign, 2)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [2]
    await expect_silence(comm)


def fill_log(campaign: Campaign, count: int) -> None:
    now = timezone.now()
    CampaignEvent.objects.bulk_create(
        CampaignEvent(
            campaign=campaign, sequence=n, event="progress", data={"percentage": n % 100, "message": ""}, emitted_at=now
        )
        for n in range(1, count + 1)
    )
    Campaign.objects.filter(pk=campaign.pk).update(last_sequence=count)


async def test_a_long_replay_crosses_log_pages_without_gap(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await db(fill_log)(campaign, 1234)
    comm = await ws(users["alice"])
    assert (await subscribe(comm, campaign, last_sequence=100))["last_sequence"] == 1234
    await publish_progress(campaign, 1)
    frames = await receive_events(comm, 1135, timeout=10)
    assert [f["sequence"] for f in frames] == list(range(101, 1236))
    assert all(f.get("replayed") is True for f in frames[:-1])
    await expect_silence(comm)


# --- transient chunks ---------------------------------------------------------------------------------------


async def test_transient_chunks_carry_after_sequence_and_no_sequence(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await publish_progress(campaign, 10)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [1]
    chunk_data = {"artifact_type": "Copy", "chunk": "Meet the", "chunk_index": 0, "is_complete": False}
    await db(publish_transient)(campaign, "artifact.chunk", chunk_data, run_id=run.public_id)
    [chunk] = await receive_events(comm, 1)
    assert "sequence" not in chunk
    assert "replayed" not in chunk
    assert chunk["after_sequence"] == 1
    assert chunk["event"] == "artifact.chunk"
    assert chunk["run_id"] == run.public_id
    assert chunk["data"] == chunk_data
    await publish_progress(campaign, 20)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [2]


async def test_transient_chunks_are_never_replayed(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 10)
    chunk_data = {"artifact_type": "Copy", "chunk": "x", "chunk_index": 0, "is_complete": True}
    await db(publish_transient)(campaign, "artifact.chunk", chunk_data)
    await publish_progress(campaign, 20)
    comm = await ws(users["alice"])
    await subscribe(comm, campaign, last_sequence=0)
    frames = await receive_events(comm, 2)
    assert [f["sequence"] for f in frames] == [1, 2]
    await expect_silence(comm)
