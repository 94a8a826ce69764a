"""The native campaign protocol (realtime/consumers/campaign.py, PROTOCOL.md §5-7), seen from a client:
subscribe and resume, unsubscribe, snapshot, cancel, ping, who may see what.

Events go through the real Redis channel layer and the process fan-out. An event published right
after a subscribe may arrive with ``"replayed": true`` (read from the log during the subscription's
catch-up); both are correct, so ``replayed`` is only asserted where the protocol demands it.
"""

from __future__ import annotations

import asyncio

import pytest

from campaigns.tests.factories import ArtifactFactory, CampaignFactory, RunFactory
from eventlog.models import CampaignEvent
from orchestration.models import OrchestrationRun
from realtime.tests.sockets import (
    ARTIFACT_FIELDS,
    EVENT_FIELDS,
    SNAPSHOT_FIELDS,
    assert_usable,
    db,
    expect_close,
    expect_error,
    expect_silence,
    publish_progress,
    receive_events,
    recv,
    subscribe,
)

pytestmark = pytest.mark.django_db(transaction=True)


# --- subscribe and resume -----------------------------------------------------------------------------------


async def test_a_subscription_whose_log_cannot_be_read_ends_the_connection_to_be_resumed(ws, users):
    """Delivery never goes on silently without events: the client is told and the socket closes
    (1011), so it reconnects and resumes from its last sequence."""
    from django.db import OperationalError, connection

    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 10)
    comm = await ws(users["alice"])

    def refuse_log_reads(execute, sql, params, many, context):
        if "campaignevent" in sql and "ORDER BY" in sql:
            raise OperationalError("the database went away")
        return execute(sql, params, many, context)

    # The consumers' queries run on the database thread; its connection starts refusing log reads.
    await db(lambda: connection.execute_wrappers.append(refuse_log_reads))()
    try:
        await comm.send_json_to({"type": "subscribe", "campaign_id": campaign.public_id})
        assert (await recv(comm))["type"] == "subscribed"
        await expect_error(comm, "internal_error")
        await expect_close(comm, 1011)
    finally:
        await db(lambda: connection.execute_wrappers.remove(refuse_log_reads))()


async def test_subscribe_answers_the_current_last_sequence_then_live_events(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 10, 20, 30)
    comm = await ws(users["alice"])
    answer = await subscribe(comm, campaign, request_id="sub-1")
    assert answer == {
        "type": "subscribed",
        "campaign_id": campaign.public_id,
        "last_sequence": 3,
        "request_id": "sub-1",
    }
    await expect_silence(comm)  # no replay without last_sequence

    await publish_progress(campaign, 40, 50)
    first, second = await receive_events(comm, 2)
    assert set(first) - {"replayed"} == EVENT_FIELDS
    assert first["event"] == "progress"
    assert first["campaign_id"] == campaign.public_id
    assert first["run_id"] is None
    assert [first["sequence"], second["sequence"]] == [4, 5]
    assert first["data"] == {"percentage": 40, "message": "at 40%"}
    assert first["emitted_at"].endswith("Z")
    await expect_silence(comm)


async def test_resume_replays_everything_after_k_in_order_then_live(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3, 4, 5)
    comm = await ws(users["alice"])
    answer = await subscribe(comm, campaign, last_sequence=2, request_id="resume")
    assert answer["last_sequence"] == 5 and answer["request_id"] == "resume"
    replayed = await receive_events(comm, 3)
    assert [f["sequence"] for f in replayed] == [3, 4, 5]
    assert all(f.get("replayed") is True for f in replayed)
    assert [f["data"]["percentage"] for f in replayed] == [3, 4, 5]

    await publish_progress(campaign, 6, 7)
    live = await receive_events(comm, 2)
    assert [f["sequence"] for f in live] == [6, 7]
    await expect_silence(comm)  # no duplicates


async def test_resume_from_zero_replays_the_whole_log(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3)
    comm = await ws(users["alice"])
    await subscribe(comm, campaign, last_sequence=0)
    assert [f["sequence"] for f in await receive_events(comm, 3)] == [1, 2, 3]
    await expect_silence(comm)


async def test_resume_from_the_current_sequence_replays_nothing(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2)
    comm = await ws(users["alice"])
    answer = await subscribe(comm, campaign, last_sequence=2)
    assert answer["last_sequence"] == 2
    await expect_silence(comm)
    await publish_progress(campaign, 3)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [3]


async def test_resume_while_events_keep_coming_has_no_gap_and_no_duplicate(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, *range(1, 21))
    comm = await ws(users["alice"])

    async def publish_more() -> None:
        await publish_progress(campaign, *range(21, 41))

    publisher = asyncio.ensure_future(publish_more())
    await subscribe(comm, campaign, last_sequence=5)
    frames = await receive_events(comm, 35, timeout=10)
    await publisher
    assert [f["sequence"] for f in frames] == list(range(6, 41))
    await expect_silence(comm)


async def test_resume_from_before_the_retained_log_gets_a_resync_snapshot(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3, 4, 5)
    await db(CampaignEvent.objects.filter(campaign=campaign, sequence__lte=3).delete)()  # retention
    comm = await ws(users["alice"])
    await subscribe(comm, campaign, last_sequence=1)
    snapshot = await recv(comm)
    assert snapshot["type"] == "snapshot", snapshot
    assert snapshot["resync"] is True
    assert snapshot["campaign_id"] == campaign.public_id
    assert set(snapshot["snapshot"]) == SNAPSHOT_FIELDS
    assert snapshot["snapshot"]["last_event_sequence"] == 5
    await expect_silence(comm)  # no replay of 4 and 5: the snapshot includes them

    await publish_progress(campaign, 6)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [6]
    await expect_silence(comm)


async def test_resume_at_the_edge_of_the_retained_log_replays(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3, 4, 5)
    await db(CampaignEvent.objects.filter(campaign=campaign, sequence__lte=3).delete)()
    comm = await ws(users["alice"])
    await subscribe(comm, campaign, last_sequence=3)  # 4 and 5 are still in the log
    frames = await receive_events(comm, 2)
    assert [f["sequence"] for f in frames] == [4, 5]
    assert all(f.get("replayed") is True for f in frames)
    await expect_silence(comm)


async def test_resume_when_the_whole_log_was_pruned_gets_a_resync_snapshot(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3)
    await db(CampaignEvent.objects.filter(campaign=campaign).delete)()
    comm = await ws(users["alice"])
    await subscribe(comm, campaign, last_sequence=1)
    snapshot = await recv(comm)
    assert snapshot["type"] == "snapshot" and snapshot["resync"] is True
    assert snapshot["snapshot"]["last_event_sequence"] == 3
    await expect_silence(comm)


async def test_resume_beyond_the_log_gets_a_resync_snapshot(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3)
    comm = await ws(users["alice"])
    answer = await subscribe(comm, campaign, last_sequence=99)
    assert answer["last_sequence"] == 3
    snapshot = await recv(comm)
    assert snapshot["type"] == "snapshot" and snapshot["resync"] is True
    assert snapshot["snapshot"]["last_event_sequence"] == 3
    await expect_silence(comm)
    await publish_progress(campaign, 4)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [4]


async def test_subscribing_twice_to_a_campaign_does_not_duplicate_events(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await subscribe(comm, campaign)
    await publish_progress(campaign, 1)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [1]
    await expect_silence(comm)


# --- unsubscribe --------------------------------------------------------------------------------------------


async def test_unsubscribe_stops_the_events(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    await publish_progress(campaign, 1)
    await receive_events(comm, 1)
    await comm.send_json_to({"type": "unsubscribe", "campaign_id": campaign.public_id, "request_id": "u1"})
    assert await recv(comm) == {"type": "unsubscribed", "campaign_id": campaign.public_id, "request_id": "u1"}
    await publish_progress(campaign, 2)
    await expect_silence(comm, 1.0)
    await assert_usable(comm)


async def test_unsubscribe_from_a_campaign_not_subscribed_is_not_found(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "unsubscribe", "campaign_id": campaign.public_id, "request_id": "u2"})
    await expect_error(comm, "not_found", "u2")
    await comm.send_json_to({"type": "unsubscribe", "campaign_id": "camp_nothing"})
    await expect_error(comm, "not_found")
    await comm.send_json_to({"type": "unsubscribe"})
    await expect_error(comm, "bad_request")
    await assert_usable(comm)


async def test_unsubscribing_one_connection_keeps_the_others_subscribed(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    first, second = await ws(users["alice"]), await ws(users["alice"])
    await subscribe(first, campaign)
    await subscribe(second, campaign)
    await first.send_json_to({"type": "unsubscribe", "campaign_id": campaign.public_id})
    assert (await recv(first))["type"] == "unsubscribed"
    await publish_progress(campaign, 1)
    assert [f["sequence"] for f in await receive_events(second, 1)] == [1]
    await expect_silence(first)


# --- snapshot -----------------------------------------------------------------------------------------------


async def test_snapshot_frame_has_the_section_6_fields(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating", steps={"Copy": "completed"})
    artifact = await db(ArtifactFactory)(run=run, type="Copy")
    await publish_progress(campaign, 25, 50)
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "snapshot", "campaign_id": campaign.public_id, "request_id": "s1"})
    frame = await recv(comm)
    assert frame["type"] == "snapshot"
    assert frame["campaign_id"] == campaign.public_id
    assert frame["request_id"] == "s1"
    assert "resync" not in frame
    snapshot = frame["snapshot"]
    assert set(snapshot) == SNAPSHOT_FIELDS
    assert snapshot["campaign_id"] == campaign.public_id
    assert snapshot["run_id"] == run.public_id
    assert snapshot["current_state"] == "generating"
    assert snapshot["completed_artifacts"] == ["Copy"]
    assert snapshot["pending_artifacts"] == ["ShortCopy", "Visual"]
    assert snapshot["audit_status"] == "not_started"
    assert snapshot["last_event_sequence"] == 2
    assert snapshot["compliance"] is None
    assert isinstance(snapshot["timestamp"], str) and snapshot["timestamp"].endswith("Z")
    [payload] = snapshot["artifacts"]
    assert set(payload) == ARTIFACT_FIELDS
    assert payload["id"] == artifact.public_id and payload["type"] == "Copy"
    await expect_silence(comm)  # a snapshot does not subscribe


async def test_snapshot_of_a_campaign_without_runs(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "snapshot", "campaign_id": campaign.public_id})
    frame = await recv(comm)
    assert "request_id" not in frame
    snapshot = frame["snapshot"]
    assert snapshot["run_id"] is None and snapshot["current_state"] == "idle"
    assert snapshot["completed_artifacts"] == [] and snapshot["artifacts"] == []
    assert snapshot["last_event_sequence"] == 0


async def test_snapshot_without_campaign_id_is_bad_request(ws, users):
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "snapshot", "request_id": "s2"})
    await expect_error(comm, "bad_request", "s2")
    await assert_usable(comm)


# --- cancel -------------------------------------------------------------------------------------------------


async def test_cancel_a_running_run(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    comm = await ws(users["alice"])
    watcher = await ws(users["operator"])  # another subscriber of the campaign
    await subscribe(comm, campaign)
    await subscribe(watcher, campaign)
    await comm.send_json_to({"type": "cancel", "run_id": run.public_id, "request_id": "c1"})

    frames = [await recv(comm) for _ in range(3)]  # the ack, orchestration.state_changed, run.cancelled
    acks = [f for f in frames if f["type"] == "cancellation_ack"]
    assert acks == [{"type": "cancellation_ack", "run_id": run.public_id, "request_id": "c1"}]
    events = [f for f in frames if f["type"] == "event"]
    assert [f["event"] for f in events] == ["orchestration.state_changed", "run.cancelled"]
    assert [f["sequence"] for f in events] == [1, 2]
    cancelled = events[-1]
    assert cancelled["run_id"] == run.public_id
    assert cancelled["data"] == {"run_id": run.public_id, "requested_by": "alice"}

    watched = await receive_events(watcher, 2)
    assert [f["event"] for f in watched] == ["orchestration.state_changed", "run.cancelled"]
    await expect_silence(comm)
    await expect_silence(watcher, 0.1)
    assert (await db(OrchestrationRun.objects.get)(pk=run.pk)).state == "cancelled"


async def test_cancel_a_finished_run_is_a_readable_bad_request(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="completed")
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "cancel", "run_id": run.public_id, "request_id": "c2"})
    frame = await expect_error(comm, "bad_request", "c2")
    assert "completed" in frame["message"] and "cancel" in frame["message"]
    await assert_usable(comm)


async def test_cancel_an_unknown_or_foreign_run_is_not_found(ws, users):
    bobs_campaign = await db(CampaignFactory)(owner=users["bob"])
    bobs_run = await db(RunFactory)(campaign=bobs_campaign, state="generating")
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "cancel", "run_id": "run_doesnotexist", "request_id": "c3"})
    unknown = await expect_error(comm, "not_found", "c3")
    await comm.send_json_to({"type": "cancel", "run_id": bobs_run.public_id, "request_id": "c4"})
    foreign = await expect_error(comm, "not_found", "c4")
    assert unknown["message"] == foreign["message"]  # nothing tells the two apart
    await comm.send_json_to({"type": "cancel", "run_id": 12})
    await expect_error(comm, "bad_request")
    await comm.send_json_to({"type": "cancel"})
    await expect_error(comm, "bad_request")
    await assert_usable(comm)
    assert (await db(OrchestrationRun.objects.get)(pk=bobs_run.pk)).state == "generating"


# --- ping, several campaigns --------------------------------------------------------------------------------


async def test_ping_pong_echoes_request_id(ws, users):
    comm = await ws(users["alice"])
    await comm.send_json_to({"type": "ping", "request_id": "p-1"})
    assert await recv(comm) == {"type": "pong", "request_id": "p-1"}
    await comm.send_json_to({"type": "ping"})
    assert await recv(comm) == {"type": "pong"}


async def test_several_campaigns_on_one_connection(ws, users):
    first = await db(CampaignFactory)(owner=users["alice"])
    second = await db(CampaignFactory)(owner=users["alice"])
    third = await db(CampaignFactory)(owner=users["alice"])  # not subscribed
    await publish_progress(second, 1)
    comm = await ws(users["alice"])
    await subscribe(comm, first)
    assert (await subscribe(comm, second))["last_sequence"] == 1
    await publish_progress(first, 10)
    await publish_progress(third, 30)
    await publish_progress(second, 20)
    await publish_progress(first, 11)
    frames = await receive_events(comm, 3)
    by_campaign: dict[str, list[int]] = {}
    for frame in frames:
        by_campaign.setdefault(frame["campaign_id"], []).append(frame["sequence"])
    assert by_campaign == {first.public_id: [1, 2], second.public_id: [2]}
    await expect_silence(comm)


# --- authorization ------------------------------------------------------------------------------------------


async def test_another_users_campaign_is_not_found_like_a_missing_one(ws, users):
    alices = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["bob"])
    await comm.send_json_to({"type": "subscribe", "campaign_id": alices.public_id, "request_id": "a"})
    foreign = await expect_error(comm, "not_found", "a")
    await comm.send_json_to({"type": "subscribe", "campaign_id": "camp_doesnotexist", "request_id": "b"})
    missing = await expect_error(comm, "not_found", "b")
    assert foreign["message"] == missing["message"]
    await comm.send_json_to({"type": "snapshot", "campaign_id": alices.public_id, "request_id": "c"})
    await expect_error(comm, "not_found", "c")
    await comm.send_json_to({"type": "subscribe", "campaign_id": alices.public_id, "last_sequence": 0})
    await expect_error(comm, "not_found")
    await publish_progress(alices, 1)
    await expect_silence(comm)


async def test_staff_can_subscribe_to_any_campaign(ws, users):
    alices = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(alices, 1)
    comm = await ws(users["operator"])
    assert (await subscribe(comm, alices))["last_sequence"] == 1
    await publish_progress(alices, 2)
    assert [f["sequence"] for f in await receive_events(comm, 1)] == [2]
    await comm.send_json_to({"type": "snapshot", "campaign_id": alices.public_id})
    assert (await recv(comm))["snapshot"]["last_event_sequence"] == 2
