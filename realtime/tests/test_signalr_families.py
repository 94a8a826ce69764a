"""The hub's two method families (realtime/signalr/families.py) as their clients receive them: the
task-012 family and the realtime-api family, with resume.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from campaigns.tests.factories import ArtifactFactory, CampaignFactory, RunFactory
from eventlog.models import CampaignEvent
from eventlog.publisher import publish, publish_transient
from marketing_agents.asgi import application
from orchestration.payloads import artifact_payload
from realtime.fanout import get_fanout
from realtime.signalr import http as signalr
from realtime.signalr.protocol import RS
from realtime.tests.hubs import (
    NEGOTIATE,
    PATH,
    Hub,
    assert_readable,
    db,
    token_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


# --- the task-012 family ----------------------------------------------------------------------------------------


async def test_task012_family_gets_receive_orchestration_event_in_camel_case(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    artifact = await db(ArtifactFactory)(run=run, type="Copy")
    connection = await hub(users["alice"])
    assert await connection.call("SubscribeToCampaign", campaign.public_id) == {"type": 3, "invocationId": "1"}
    await db(publish)(
        campaign,
        "orchestration.state_changed",
        {"state": "generating", "previous_state": "planning"},
        run_id=run.public_id,
    )

    payload = await db(artifact_payload)(artifact)
    await db(publish)(campaign, "artifact.generated", {"artifact": payload}, run_id=run.public_id)

    first = await connection.next()
    assert first["type"] == 1 and "invocationId" not in first
    assert first["target"] == "ReceiveOrchestrationEvent"
    evt = first["arguments"][0]
    assert evt["event"] == "orchestration.state_changed"
    assert evt["campaignId"] == campaign.public_id and evt["runId"] == run.public_id
    assert evt["sequence"] == 1 and "emittedAt" in evt
    assert evt["data"] == {"state": "generating", "previousState": "planning"}

    second, update = await connection.next(), await connection.next()
    assert second["target"] == "ReceiveOrchestrationEvent" and second["arguments"][0]["sequence"] == 2
    assert update["target"] == "ReceiveArtifactUpdate" and "invocationId" not in update
    sent = update["arguments"][0]
    assert sent["campaignId"] == campaign.public_id and sent["sequence"] == 2
    assert sent["artifact"]["id"] == artifact.public_id and sent["artifact"]["content"] == artifact.content
    assert {"campaignId", "createdAt", "agentName", "runId"} <= set(sent["artifact"])


async def test_get_campaign_snapshot_returns_and_sends_it(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    connection = await hub(users["alice"])
    answer = await connection.call("GetCampaignSnapshot", campaign.public_id)
    snapshot = answer["result"]
    assert "error" not in answer
    assert snapshot["campaignId"] == campaign.public_id and snapshot["currentState"] == "idle"
    assert {"lastEventSequence", "completedArtifacts", "pendingArtifacts", "auditStatus"} <= set(snapshot)
    assert [c["target"] for c in connection.calls] == ["ReceiveCampaignSnapshot"]
    assert connection.calls[0]["arguments"] == [snapshot]


async def test_cancel_run_is_acknowledged(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    connection = await hub(users["alice"])
    await connection.call("SubscribeToCampaign", campaign.public_id, invocation_id="s")
    answer = await connection.call("CancelRun", run.public_id, invocation_id="c")
    assert answer == {"type": 3, "invocationId": "c"}
    acks = [c for c in connection.calls if c.get("target") == "ReceiveCancellationAcknowledgement"]
    assert acks == [{"type": 1, "target": "ReceiveCancellationAcknowledgement", "arguments": [run.public_id]}]
    seen = connection.calls + await connection.until("ReceiveOrchestrationEvent")
    events = [c["arguments"][0]["event"] for c in seen if c.get("target") == "ReceiveOrchestrationEvent"]
    while "run.cancelled" not in events:
        events.append((await connection.until("ReceiveOrchestrationEvent"))[-1]["arguments"][0]["event"])
    assert "run.cancelled" in events


async def test_cancel_of_a_foreign_or_finished_run_is_a_readable_error(hub, users):
    bobs = await db(RunFactory)(campaign=await db(CampaignFactory)(owner=users["bob"]), state="generating")
    done = await db(RunFactory)(campaign=await db(CampaignFactory)(owner=users["alice"]), state="completed")
    connection = await hub(users["alice"])
    assert (await connection.call("CancelRun", bobs.public_id))["error"] == "Run not found."
    error = (await connection.call("CancelRun", done.public_id))["error"]
    assert_readable(error)
    assert "completed" in error


async def publish_progress(campaign, *percentages: int) -> None:
    for percentage in percentages:
        await db(publish)(campaign, "progress", {"percentage": percentage, "message": f"at {percentage}%"})


async def task012_events(connection: Hub, count: int) -> list[dict[str, Any]]:
    """The next ``count`` ReceiveOrchestrationEvent arguments (pings skipped; anything else fails)."""
    events = []
    while len(events) < count:
        message = await connection.next()
        if message.get("type") == 6:
            continue
        assert message.get("target") == "ReceiveOrchestrationEvent", message
        events.append(message["arguments"][0])
    return events


async def test_subscribe_with_last_sequence_replays_what_was_missed_then_live(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3, 4, 5)
    connection = await hub(users["alice"])
    # The Completion comes first, then the replay: nothing arrives before the invoke() resolves.
    assert await connection.call("SubscribeToCampaign", campaign.public_id, 2) == {"type": 3, "invocationId": "1"}
    assert connection.calls == []
    replayed = await task012_events(connection, 3)
    assert [e["sequence"] for e in replayed] == [3, 4, 5]
    assert all(e["replayed"] is True for e in replayed)
    assert [e["data"]["percentage"] for e in replayed] == [3, 4, 5]
    assert all(e["campaignId"] == campaign.public_id and e["event"] == "progress" for e in replayed)

    await publish_progress(campaign, 6, 7)
    live = await task012_events(connection, 2)
    assert [e["sequence"] for e in live] == [6, 7] and not any(e.get("replayed") for e in live)
    assert await connection.quiet()  # no duplicates


async def test_subscribe_with_last_sequence_zero_replays_the_whole_log(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3)
    connection = await hub(users["alice"])
    await connection.call("SubscribeToCampaign", campaign.public_id, 0)
    assert [e["sequence"] for e in await task012_events(connection, 3)] == [1, 2, 3]
    assert await connection.quiet()


async def test_subscribe_with_the_current_sequence_replays_nothing(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2)
    connection = await hub(users["alice"])
    await connection.call("subscribetocampaign", campaign.public_id, 2)
    assert await connection.quiet()
    await publish_progress(campaign, 3)
    assert [e["sequence"] for e in await task012_events(connection, 1)] == [3]


async def test_subscribe_without_or_with_a_null_last_sequence_does_not_replay(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2)
    plain, null = await hub(users["alice"]), await hub(users["alice"])
    await plain.call("SubscribeToCampaign", campaign.public_id)
    await null.call("SubscribeToCampaign", campaign.public_id, None)  # a .NET long? or a JS undefined
    assert await plain.quiet() and await null.quiet()
    await publish_progress(campaign, 3)
    for connection in (plain, null):
        [event] = await task012_events(connection, 1)
        assert event["sequence"] == 3 and "replayed" not in event


async def test_a_resume_while_events_keep_coming_has_no_gap_and_no_duplicate(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, *range(1, 21))
    connection = await hub(users["alice"])
    publisher = asyncio.ensure_future(publish_progress(campaign, *range(21, 41)))
    await connection.call("SubscribeToCampaign", campaign.public_id, 5)
    assert connection.calls == []
    events = await task012_events(connection, 35)
    await publisher
    assert [e["sequence"] for e in events] == list(range(6, 41))
    assert await connection.quiet()


async def test_join_campaign_group_with_last_sequence_replays_its_client_methods(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    await db(publish)(campaign, "campaign.started", {"run_id": run.public_id, "plan": []}, run_id=run.public_id)  # 1
    # 2: progress has no client method in this family
    await db(publish)(campaign, "progress", {"percentage": 50, "message": "half"}, run_id=run.public_id)
    await db(publish)(campaign, "campaign.completed", {"run_id": run.public_id}, run_id=run.public_id)  # 3
    connection = await hub(users["alice"])
    # The seed's family carries no sequence: a client resumes from a snapshot's lastEventSequence.
    assert (await connection.call("GetCampaignSnapshot", campaign.public_id))["result"]["lastEventSequence"] == 3
    assert await connection.call("JoinCampaignGroup", campaign.public_id, 1, invocation_id="j") == {
        "type": 3,
        "invocationId": "j",
    }
    assert (await connection.next())["target"] == "OnCampaignCompleted"  # 2 has no method; 1 was seen
    assert await connection.quiet()
    await db(publish)(campaign, "campaign.started", {"run_id": run.public_id, "plan": []}, run_id=run.public_id)
    assert await connection.next() == {"type": 1, "target": "OnCampaignStarted", "arguments": [campaign.public_id]}


@pytest.mark.parametrize(
    ("method", "snapshot_target"),
    [("SubscribeToCampaign", "ReceiveCampaignSnapshot"), ("JoinCampaignGroup", "OnCampaignStatusReceived")],
)
@pytest.mark.parametrize("pruned", ["before", "beyond"])
async def test_a_resume_the_log_cannot_serve_gets_a_snapshot(hub, users, method, snapshot_target, pruned):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1, 2, 3, 4, 5)
    if pruned == "before":
        await db(CampaignEvent.objects.filter(campaign=campaign, sequence__lte=3).delete)()  # retention
    connection = await hub(users["alice"])
    assert await connection.call(method, campaign.public_id, 1 if pruned == "before" else 99) == {
        "type": 3,
        "invocationId": "1",
    }
    snapshot = await connection.next()
    assert snapshot["target"] == snapshot_target, snapshot
    assert snapshot["arguments"][0]["campaignId"] == campaign.public_id
    assert snapshot["arguments"][0]["lastEventSequence"] == 5
    assert await connection.quiet()  # no replay of 4 and 5: the snapshot includes them
    await db(publish)(campaign, "campaign.completed", {"run_id": None})
    assert (await connection.next())["type"] == 1


@pytest.mark.parametrize(
    ("method", "value", "got"),
    [
        ("SubscribeToCampaign", -1, "got -1"),
        ("SubscribeToCampaign", "3", "got a string"),
        ("SubscribeToCampaign", True, "got true"),
        ("SubscribeToCampaign", 2.5, "got 2.5"),
        ("SubscribeToCampaign", 3.0, "got 3.0"),
        ("JoinCampaignGroup", -1, "got -1"),
        ("JoinCampaignGroup", {}, "got an object"),
    ],
)
async def test_a_bad_last_sequence_is_a_readable_error_and_subscribes_nothing(hub, users, method, value, got):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    await publish_progress(campaign, 1)
    connection = await hub(users["alice"])
    answer = await connection.call(method, campaign.public_id, value)
    assert set(answer) == {"type", "invocationId", "error"}
    assert_readable(answer["error"])
    assert answer["error"].startswith(f"The lastSequence argument of {method} must be a non-negative integer")
    assert got in answer["error"]
    await db(publish)(campaign, "campaign.completed", {"run_id": None})
    assert await connection.quiet()  # not subscribed
    ok = await connection.call("JoinCampaignGroup", campaign.public_id, 2, invocation_id="ok")
    assert ok == {"type": 3, "invocationId": "ok"}  # the connection is still usable


# --- the realtime-api family ------------------------------------------------------------------------------------


async def test_realtime_api_family_gets_its_client_methods(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    artifact = await db(ArtifactFactory)(run=run, type="ShortCopy")

    payload = await db(artifact_payload)(artifact)
    connection = await hub(users["alice"])
    assert await connection.call("JoinCampaignGroup", campaign.public_id) == {"type": 3, "invocationId": "1"}

    await db(publish)(campaign, "campaign.started", {"run_id": run.public_id, "plan": ["Copy"]}, run_id=run.public_id)
    # no client method for progress here: not sent
    await db(publish)(campaign, "progress", {"percentage": 10, "message": "working"}, run_id=run.public_id)
    await db(publish_transient)(
        campaign,
        "artifact.chunk",
        {"artifact_type": "Copy", "chunk": "Hel", "chunk_index": 0, "is_complete": False},
        run_id=run.public_id,
    )
    await db(publish)(campaign, "artifact.generated", {"artifact": payload}, run_id=run.public_id)
    audit = {
        "is_compliant": True,
        "compliance_score": 92,
        "issues": [{"artifact_type": "Copy", "issue_description": "fine", "severity": "Low"}],
        "feedback": "ok",
        "audited_at": "2026-11-22T03:40:00Z",
    }
    await db(publish)(campaign, "compliance.completed", audit, run_id=run.public_id)
    await db(publish)(
        campaign,
        "generation.failed",
        {"error_message": "boom", "failed_at": "2026-11-22T03:41:00Z"},
        run_id=run.public_id,
    )
    await db(publish)(campaign, "campaign.completed", {"run_id": run.public_id}, run_id=run.public_id)

    calls = await connection.until("OnCampaignCompleted")
    assert all("invocationId" not in c for c in calls)
    by_target = {c["target"]: c["arguments"] for c in calls}
    assert [c["target"] for c in calls] == [
        "OnCampaignStarted",
        "OnChunkReceived",
        "OnArtifactGenerated",
        "OnComplianceCheckCompleted",
        "OnGenerationFailed",
        "OnCampaignCompleted",
    ]
    assert by_target["OnCampaignStarted"] == [campaign.public_id]
    assert by_target["OnCampaignCompleted"] == [campaign.public_id]
    chunk = by_target["OnChunkReceived"][0]
    assert {k: chunk[k] for k in ("campaignId", "artifactType", "chunk", "isComplete")} == {
        "campaignId": campaign.public_id,
        "artifactType": "Copy",
        "chunk": "Hel",
        "isComplete": False,
    }
    generated = by_target["OnArtifactGenerated"][0]
    assert {"id", "campaignId", "type", "content", "metadata", "createdAt", "agentName"} <= set(generated)
    assert generated["type"] == "ShortCopy" and generated["content"] == artifact.content
    compliance = by_target["OnComplianceCheckCompleted"][0]
    assert compliance["campaignId"] == campaign.public_id and compliance["isCompliant"] is True
    assert compliance["complianceScore"] == 92 and compliance["auditedAt"] == "2026-11-22T03:40:00Z"
    assert compliance["issues"] == [{"artifactType": "Copy", "issueDescription": "fine", "severity": "Low"}]
    failed = by_target["OnGenerationFailed"][0]
    assert failed["campaignId"] == campaign.public_id and failed["errorMessage"] == "boom"
    assert failed["failedAt"] == "2026-11-22T03:41:00Z"


async def test_request_campaign_status_answers_on_campaign_status_received(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    connection = await hub(users["alice"])
    answer = await connection.call("RequestCampaignStatus", campaign.public_id)
    assert answer == {"type": 3, "invocationId": "1"}
    assert [c["target"] for c in connection.calls] == ["OnCampaignStatusReceived"]
    assert connection.calls[0]["arguments"][0]["campaignId"] == campaign.public_id


async def test_families_are_per_subscription(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    task012 = await hub(users["alice"])
    seed = await hub(users["alice"])
    await task012.call("SubscribeToCampaign", campaign.public_id)
    await seed.call("JoinCampaignGroup", campaign.public_id)
    await db(publish)(campaign, "campaign.completed", {"run_id": None})
    assert (await task012.next())["target"] == "ReceiveOrchestrationEvent"
    assert (await seed.next())["arguments"] == [campaign.public_id]


async def test_leave_stops_the_events(hub, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    connection = await hub(users["alice"])
    await connection.call("JoinCampaignGroup", campaign.public_id, invocation_id="j")
    assert await connection.call("LeaveCampaignGroup", campaign.public_id, invocation_id="l") == {
        "type": 3,
        "invocationId": "l",
    }
    await db(publish)(campaign, "campaign.completed", {"run_id": None})
    assert await connection.quiet(0.5)
    await connection.call("SubscribeToCampaign", campaign.public_id, invocation_id="s")
    assert await connection.call("UnsubscribeFromCampaign", campaign.public_id, invocation_id="u") == {
        "type": 3,
        "invocationId": "u",
    }


async def test_system_notices_reach_hub_clients(hub, users):
    from realtime.services import notice_send

    connection = await hub(users["alice"])
    await connection.call("JoinCampaignGroup", "camp_missing")  # the hub is running
    await db(notice_send)(level="warning", message="Maintenance at noon", sent_by=None)
    call = await connection.until("ReceiveSystemNotice")
    assert call[-1]["arguments"][0]["message"] == "Maintenance at noon"


async def test_server_shutdown_sends_close_with_allow_reconnect(hub, users):
    connection = await hub(users["alice"])
    assert "error" in await connection.call("JoinCampaignGroup", "camp_missing")  # the session is set up
    await get_fanout().close_all(timeout=0.5)  # what marketing_agents.serve does when daphne stops
    outputs = []
    while not connection.comm.output_queue.empty():
        outputs.append(connection.comm.output_queue.get_nowait())
    texts = [o["text"] for o in outputs if o["type"] == "websocket.send"]
    assert texts == [
        json.dumps({"type": 7, "error": "The server is shutting down.", "allowReconnect": True}, separators=(",", ":"))
        + RS
    ]
    assert outputs[-1]["type"] == "websocket.close"
    assert outputs[-1].get("code") == 1001  # going away
    assert not signalr.shutting_down()  # only marketing_agents.serve turns new connections away


async def test_while_shutting_down_new_connections_and_negotiations_are_refused(hub, users, monkeypatch):
    monkeypatch.setitem(signalr._shutdown, "started", True)
    comm = WebsocketCommunicator(application, f"{PATH}?access_token={token_for(users['alice'])}")
    assert not (await comm.connect(timeout=5))[0]
    response = await db(Client().post)(NEGOTIATE, HTTP_AUTHORIZATION=f"Bearer {token_for(users['alice'])}")
    assert response.status_code == 503 and "shutting down" in response.json()["error"]
