"""Fair shares of the workers (orchestration/fairshare.py), as a client sees them over REST and in the
event logs: runs past an account's limit are queued, not refused, and start oldest first as the
account's active runs finish; the queue position is in the run and its events; operators change an
account's limit in the admin. No worker runs here (the e2e test with workers is test_fairshare_e2e.py):
a run that starts stays ``pending``, and a run is finished by cancelling it.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from campaigns.tests.factories import CampaignFactory, RunFactory
from orchestration.models import OrchestrationRun, RunLimit, RunState
from orchestration.services import runs_recover
from orchestration.tests.api import assert_json_error, events, get_run, post, run_url, runs_url

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def limit_of_two(settings):
    settings.RUNS_MAX_ACTIVE_PER_USER = 2


def start(client: APIClient, owner, count: int) -> list[dict]:
    runs = []
    for _ in range(count):
        response = post(client, runs_url(CampaignFactory(owner=owner)))
        assert response.status_code == 202, response.content
        runs.append(response.json())
    return runs


def states(runs: list[dict]) -> list[tuple[str, int | None]]:
    found = {run.public_id: run for run in OrchestrationRun.objects.filter(public_id__in=[r["id"] for r in runs])}
    return [(found[r["id"]].state, get_run_position(found[r["id"]])) for r in runs]


def get_run_position(run: OrchestrationRun) -> int | None:
    from orchestration.selectors import queue_position

    return queue_position(run)


def run_events(client: APIClient, run: dict, name: str) -> list[dict]:
    campaign = OrchestrationRun.objects.get(public_id=run["id"]).campaign
    return [event for event in events(client, campaign) if event["event"] == name]


def cancel(client: APIClient, run: dict) -> None:
    assert post(client, run_url(run["id"], "cancel")).status_code == 202


def test_runs_past_the_limit_are_queued_with_their_place_not_refused(alice_api, alice):
    runs = start(alice_api, alice, 4)

    assert [(run["state"], run["queue_position"]) for run in runs] == [
        ("pending", None),
        ("pending", None),
        ("queued", 1),
        ("queued", 2),
    ]
    assert get_run(alice_api, runs[3]["id"])["queue_position"] == 2
    [queued] = run_events(alice_api, runs[3], "run.queued")
    assert queued["run_id"] == runs[3]["id"]
    assert queued["data"] == {"run_id": runs[3]["id"], "position": 2, "limit": 2}
    states_logged = [e["data"]["state"] for e in run_events(alice_api, runs[3], "orchestration.state_changed")]
    assert states_logged == ["queued"]


def test_another_accounts_run_starts_at_once(alice_api, alice, bob_api, bob):
    start(alice_api, alice, 4)

    [bobs] = start(bob_api, bob, 1)

    assert bobs["state"] == "pending" and bobs["queue_position"] is None


def test_a_finished_run_starts_the_oldest_queued_one_and_the_queue_moves_up(alice_api, alice):
    runs = start(alice_api, alice, 5)

    cancel(alice_api, runs[0])

    assert states(runs) == [("cancelled", None), ("pending", None), ("pending", None), ("queued", 1), ("queued", 2)]
    started = run_events(alice_api, runs[2], "orchestration.state_changed")[-1]["data"]
    assert started == {"state": "pending", "previous_state": "queued"}
    assert [e["data"]["position"] for e in run_events(alice_api, runs[3], "run.queued")] == [2, 1]
    assert [e["data"]["position"] for e in run_events(alice_api, runs[4], "run.queued")] == [3, 2]


def test_cancelling_a_queued_run_starts_nothing_and_moves_the_ones_behind_it(alice_api, alice):
    runs = start(alice_api, alice, 5)

    cancel(alice_api, runs[2])

    assert states(runs) == [("pending", None), ("pending", None), ("cancelled", None), ("queued", 1), ("queued", 2)]
    assert [e["data"]["position"] for e in run_events(alice_api, runs[4], "run.queued")] == [3, 2]


def test_a_new_run_queues_behind_the_queued_ones_even_if_a_share_is_free(alice_api, alice):
    """A share freed without a run finishing (a run deleted) is found by the recovery task; until
    then a new run does not jump the queue."""
    runs = start(alice_api, alice, 3)
    OrchestrationRun.objects.filter(public_id=runs[0]["id"]).delete()

    [late] = start(alice_api, alice, 1)

    assert (late["state"], late["queue_position"]) == ("queued", 2)
    runs_recover()
    assert states(runs[1:] + [late]) == [("pending", None), ("pending", None), ("queued", 1)]


def test_a_run_waiting_for_approval_holds_its_share(alice_api, alice):
    RunFactory(campaign=CampaignFactory(owner=alice), state=RunState.AWAITING_APPROVAL)
    RunFactory(campaign=CampaignFactory(owner=alice), state=RunState.GENERATING)

    [run] = start(alice_api, alice, 1)

    assert run["state"] == "queued"


def test_a_queued_tool_asks_for_its_approval_once_it_gets_a_share(alice_api, alice):
    first = start(alice_api, alice, 2)
    campaign = CampaignFactory(owner=alice)
    body = {"tool_name": "generate_visual", "require_approval": True}
    tool = post(alice_api, f"/api/campaigns/{campaign.public_id}/tools/", body).json()
    approval = tool["approvals"][0]
    assert tool["state"] == "queued" and approval["state"] == "pending"
    assert run_events(alice_api, tool, "approval.required") == []

    early = post(alice_api, f"/api/runs/{tool['id']}/approvals/{approval['id']}/", {"decision": "approve"})
    assert "queued" in assert_json_error(early, 409)["detail"]

    cancel(alice_api, first[0])

    assert get_run(alice_api, tool["id"])["state"] == "awaiting_approval"
    [required] = run_events(alice_api, tool, "approval.required")
    assert required["data"]["approval_id"] == approval["id"]
    approved = post(alice_api, f"/api/runs/{tool['id']}/approvals/{approval['id']}/", {"decision": "approve"})
    assert approved.status_code == 200 and get_run(alice_api, tool["id"])["state"] == "pending"


def test_a_retry_at_the_limit_is_queued_too(alice_api, alice):
    failed = RunFactory(campaign=CampaignFactory(owner=alice), state=RunState.FAILED)
    start(alice_api, alice, 2)

    response = post(alice_api, run_url(failed, "retry"))

    assert response.status_code == 202, response.content
    assert (response.json()["state"], response.json()["queue_position"]) == ("queued", 1)


def test_no_limit_queues_nothing(alice_api, alice, settings):
    settings.RUNS_MAX_ACTIVE_PER_USER = 0

    assert {run["state"] for run in start(alice_api, alice, 6)} == {"pending"}


def test_an_operator_raises_an_accounts_limit_in_the_admin_and_its_queue_starts(operator_client, alice_api, alice):
    runs = start(alice_api, alice, 5)

    response = operator_client.post(
        "/admin/orchestration/runlimit/add/", {"user": alice.pk, "max_active_runs": 4}, follow=True
    )

    assert response.status_code == 200 and RunLimit.objects.get(user=alice).max_active_runs == 4
    assert [state for state, _ in states(runs)] == ["pending"] * 4 + ["queued"]
    listed = operator_client.get("/admin/orchestration/runlimit/").content.decode()
    assert alice.username in listed

    limit = RunLimit.objects.get(user=alice)
    operator_client.post(f"/admin/orchestration/runlimit/{limit.pk}/change/", {"user": alice.pk, "max_active_runs": 0})
    assert [state for state, _ in states(runs)] == ["pending"] * 5


def test_an_accounts_own_lower_limit_queues_sooner(alice_api, alice):
    RunLimit.objects.create(user=alice, max_active_runs=1)

    assert [run["state"] for run in start(alice_api, alice, 2)] == ["pending", "queued"]


@pytest.mark.django_db(transaction=True)
def test_simultaneous_starts_never_exceed_the_limit(alice):
    """Six clients start runs on six campaigns at once: the account's lock lets exactly two begin."""
    campaigns = [CampaignFactory(owner=alice) for _ in range(6)]
    barrier = threading.Barrier(len(campaigns))
    answers: list[dict] = []

    def start_one(campaign) -> None:
        client = APIClient()
        client.force_authenticate(alice)
        try:
            barrier.wait(10)
            answers.append(post(client, runs_url(campaign)).json())
        finally:
            connection.close()

    threads = [threading.Thread(target=start_one, args=(campaign,)) for campaign in campaigns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(answer["state"] for answer in answers) == ["pending"] * 2 + ["queued"] * 4
    assert sorted(answer["queue_position"] or 0 for answer in answers) == [0, 0, 1, 2, 3, 4]


def test_a_retried_run_queues_at_the_end_whatever_its_age(alice_api, alice):
    failed = RunFactory(campaign=CampaignFactory(owner=alice), state=RunState.FAILED)  # the oldest run
    runs = start(alice_api, alice, 3)

    retried = post(alice_api, run_url(failed, "retry")).json()

    assert (retried["state"], retried["queue_position"]) == ("queued", 2)
    said = [
        (e["event"], e["data"].get("state") or e["data"].get("position")) for e in events(alice_api, failed.campaign)
    ]
    assert said[-3:] == [("orchestration.state_changed", "queued"), ("run.queued", 2), ("agent.thought", None)]
    cancel(alice_api, runs[0])
    assert states(runs[1:]) == [("pending", None), ("pending", None)]  # the run queued before it went first
    assert (get_run(alice_api, retried["id"])["state"], get_run(alice_api, retried["id"])["queue_position"]) == (
        "queued",
        1,
    )


def test_a_queued_run_does_not_hide_the_campaigns_artifacts_from_its_snapshot(alice_api, alice):
    from campaigns.tests.factories import ArtifactFactory
    from realtime.snapshots import campaign_snapshot

    start(alice_api, alice, 2)
    campaign = CampaignFactory(owner=alice)
    for kind in ("Copy", "ShortCopy", "Visual"):
        ArtifactFactory(campaign=campaign, type=kind)

    start_queued = post(alice_api, runs_url(campaign)).json()

    assert start_queued["state"] == "queued"
    snapshot = campaign_snapshot(campaign.pk)
    assert snapshot["current_state"] == "queued"
    assert sorted(snapshot["completed_artifacts"]) == ["Copy", "ShortCopy", "Visual"]
    assert snapshot["pending_artifacts"] == []


@pytest.mark.django_db(transaction=True)
def test_a_share_freed_while_a_queued_runs_campaign_is_locked_passes_it_over_without_a_deadlock(alice):
    """A retry on campaign X locks X's old run and X, while a run finishing elsewhere frees a share
    for X's queued run. Waiting for X there closed a cycle (the retry's insert waits for the finishing
    transaction's change of X's queued run): PostgreSQL killed one of them. Now the finishing run passes
    X over, the retry is refused (X has its queued run), and the recovery task starts X's run."""
    from django.db import transaction

    from orchestration import services
    from orchestration.lifecycle import locked_run

    campaign_x = CampaignFactory(owner=alice)
    old = RunFactory(campaign=campaign_x, state=RunState.FAILED)
    active = services.run_start(campaign=CampaignFactory(owner=alice), created_by=alice)
    services.run_start(campaign=CampaignFactory(owner=alice), created_by=alice)  # fills the second share
    queued_x = services.run_start(campaign=campaign_x, created_by=alice)
    assert queued_x.state == RunState.QUEUED
    outcome: dict[str, object] = {}
    x_locked, finished = threading.Event(), threading.Event()

    def retry() -> None:
        try:
            with transaction.atomic():
                locked_run(old.pk)  # what run_retry does first: the old run and campaign X, FOR UPDATE
                x_locked.set()
                finished.wait(30)  # the finishing transaction has run (or waits for a lock: see below)
                services.run_retry(run=old, requested_by=alice)
        except Exception as exc:
            outcome["retry"] = exc
        finally:
            connection.close()

    def finish() -> None:
        try:
            x_locked.wait(10)
            services.run_cancel(run=active, requested_by=alice)
            outcome["finish"] = "done"
        except Exception as exc:
            outcome["finish"] = exc
        finally:
            finished.set()
            connection.close()

    threads = [threading.Thread(target=retry), threading.Thread(target=finish)]
    for thread in threads:
        thread.start()
    # Should the finishing transaction wait for campaign X instead (the bug), let the retry go on, as
    # it would in production: the two then wait for each other.
    waiting = 0
    for _ in range(300):
        if finished.wait(0.1):
            break
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            waiting = cursor.fetchone()[0]
        if waiting:
            finished.set()
            break
    for thread in threads:
        thread.join(30)

    assert outcome.get("finish") == "done", outcome
    assert "active run" in str(outcome.get("retry")), outcome  # refused: X's queued run is active for X
    queued_x.refresh_from_db()
    assert queued_x.state == RunState.QUEUED  # passed over, not lost
    services.runs_recover()
    queued_x.refresh_from_db()
    assert queued_x.state == RunState.PENDING
