"""``manage.py campaign_run`` as an operator runs it: what it prints and how it exits.

The tests that follow a run use the real stack: a Celery worker, Redis and PostgreSQL.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from campaigns.tests.factories import CampaignFactory, RunFactory, UserFactory
from marketing_agents.tests.processes import BASE_DIR, process_env
from orchestration import services
from orchestration.models import OrchestrationRun, RunState
from orchestration.tests.conftest import events_of, names

EVENT_LINE = re.compile(r"^#(\d+)\s+(\S+)")
PROGRESS_LINE = re.compile(r"^\[[#.]{30}\]\s+(\d+)% ")


def run_command(*args: str) -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        call_command("campaign_run", *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def event_lines(output: str) -> list[tuple[int, str]]:
    return [(int(m[1]), m[2]) for line in output.splitlines() if (m := EVENT_LINE.match(line))]


def progress_lines(output: str) -> list[int]:
    return [int(m[1]) for line in output.splitlines() if (m := PROGRESS_LINE.match(line))]


# --- following a run to its end --------------------------------------------------------------------


@pytest.mark.e2e
def test_follow_prints_the_run_live_and_ends_on_campaign_completed(worker):
    campaign = CampaignFactory(owner=UserFactory(username="alice"), name="Bottle launch")

    output, error = run_command(campaign.public_id, "--follow", "--timeout", "90")

    assert error is None, output + worker.log()[-3000:]
    lines = output.splitlines()
    run = OrchestrationRun.objects.get(campaign=campaign)
    assert run.state == RunState.COMPLETED
    assert lines[0] == f"Started {run.public_id} for Bottle launch ({campaign.public_id})."
    assert re.fullmatch(r"Started run_[A-Za-z0-9_-]+ for .+", lines[0])
    printed = event_lines(output)
    # Every durable event of the run is printed once, in sequence order, with its number.
    logged = [(e.sequence, e.event) for e in events_of(campaign) if e.event != "progress"]
    assert printed == logged
    assert [n for n, _ in printed] == sorted(n for n, _ in printed)
    assert printed[0] == (1, "orchestration.state_changed")
    assert "campaign.started" in [name for _, name in printed]
    assert printed[-1][1] == "campaign.completed"
    assert EVENT_LINE.match(lines[-1]) and "campaign.completed" in lines[-1], "nothing after the end"
    # Progress is drawn as a bar and reaches 100%.
    progress = progress_lines(output)
    assert progress and progress == sorted(progress) and progress[-1] == 100
    assert any("100%" in line and line.startswith("[" + "#" * 30 + "]") for line in lines)
    # The events are described for a person.
    assert re.search(r"state - -> pending", output)
    assert re.search(r"artifact\.generated\s+Copy v1 by copywriter \(\d+ chars\)", output)
    assert re.search(r"compliance\.completed\s+(not )?compliant, score \d+", output)


@pytest.mark.e2e
def test_follow_of_a_failing_run_prints_generation_failed_and_exits_1(worker):
    campaign = CampaignFactory(settings={"simulate": {"Copy": {"fail_permanently": True}}})

    output, error = run_command(campaign.public_id, "--follow", "--timeout", "90")

    assert isinstance(error, CommandError), output
    assert error.returncode == 1
    run = OrchestrationRun.objects.get(campaign=campaign)
    assert run.state == RunState.FAILED
    assert run.public_id in str(error) and "failed" in str(error)
    printed = event_lines(output)
    assert printed[-1][1] == "generation.failed"
    assert "step Copy" in output.splitlines()[-1]
    assert "campaign.completed" not in output


@pytest.mark.e2e
def test_follow_of_a_cancelled_run_exits_2(worker):
    campaign = CampaignFactory(settings={"simulate": {"Copy": {"delay_ms": 100}}})

    def cancel_once_generating() -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                run = OrchestrationRun.objects.filter(campaign=campaign).first()
                if run is not None and run.state == RunState.GENERATING:
                    services.run_cancel(run=run, requested_by=campaign.owner)
                    return
                time.sleep(0.05)
        finally:
            connection.close()

    canceller = threading.Thread(target=cancel_once_generating)
    canceller.start()
    try:
        output, error = run_command(campaign.public_id, "--follow", "--timeout", "90")
    finally:
        canceller.join(70)

    assert isinstance(error, CommandError), output
    assert error.returncode == 2
    assert OrchestrationRun.objects.get(campaign=campaign).state == RunState.CANCELLED
    assert event_lines(output)[-1][1] == "run.cancelled"
    assert f"requested_by={campaign.owner.username}" in output.splitlines()[-1]


@pytest.mark.e2e
def test_follow_prints_only_the_new_runs_events(worker):
    campaign = CampaignFactory()
    first, error = run_command(campaign.public_id, "--follow", "--timeout", "90")
    assert error is None, first
    first_last = event_lines(first)[-1][0]

    second, error = run_command(campaign.public_id, "--follow", "--timeout", "90")

    assert error is None, second
    printed = event_lines(second)
    assert printed[0] == (first_last + 1, "orchestration.state_changed")
    assert printed[-1][1] == "campaign.completed"
    assert names(events_of(campaign)).count("campaign.completed") == 2


def run_as_process(campaign) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "campaign_run", campaign.public_id, "--follow", "--timeout", "90"],
        cwd=BASE_DIR,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.e2e
def test_campaign_run_as_a_real_process_exits_0(worker):
    campaign = CampaignFactory()

    process = run_as_process(campaign)

    assert process.returncode == 0, process.stdout + process.stderr
    assert process.stdout.startswith("Started run_")
    assert "campaign.completed" in process.stdout
    assert "100%" in process.stdout
    assert OrchestrationRun.objects.get(campaign=campaign).state == RunState.COMPLETED


@pytest.mark.e2e
def test_campaign_run_as_a_real_process_exits_1_when_the_run_fails(worker):
    campaign = CampaignFactory(settings={"simulate": {"Copy": {"fail_permanently": True}}})

    process = run_as_process(campaign)

    assert process.returncode == 1, process.stdout + process.stderr
    assert "generation.failed" in process.stdout
    assert "Traceback" not in process.stderr
    run = OrchestrationRun.objects.get(campaign=campaign)
    assert f"Run {run.public_id} ended failed." in process.stderr


# --- refusals (no worker needed) -------------------------------------------------------------------


@pytest.mark.django_db
def test_an_unknown_campaign_is_a_command_error():
    output, error = run_command("camp_doesnotexist")

    assert isinstance(error, CommandError)
    assert "camp_doesnotexist" in str(error)
    assert output == ""
    assert not OrchestrationRun.objects.exists()


@pytest.mark.django_db
def test_a_campaign_with_an_active_run_is_a_command_error_and_starts_nothing():
    campaign = CampaignFactory()
    active = RunFactory(campaign=campaign, state=RunState.GENERATING)

    output, error = run_command(campaign.public_id, "--follow")

    assert isinstance(error, CommandError)
    assert "active run" in str(error)
    assert output == ""
    assert list(OrchestrationRun.objects.filter(campaign=campaign)) == [active]


@pytest.mark.django_db
def test_starting_without_follow_prints_the_run_and_returns():
    campaign = CampaignFactory(name="Quiet launch")

    output, error = run_command(campaign.public_id)

    assert error is None
    run = OrchestrationRun.objects.get(campaign=campaign)
    assert output == f"Started {run.public_id} for Quiet launch ({campaign.public_id}).\n"
    assert run.state == RunState.PENDING and run.created_by == campaign.owner


@pytest.mark.django_db
def test_as_starts_the_run_as_that_user(operator):
    campaign = CampaignFactory()

    _, error = run_command(campaign.public_id, "--as", "charlie")

    assert error is None
    assert OrchestrationRun.objects.get(campaign=campaign).created_by == operator


@pytest.mark.django_db
def test_as_an_unknown_user_is_a_command_error():
    campaign = CampaignFactory()

    _, error = run_command(campaign.public_id, "--as", "nobody")

    assert isinstance(error, CommandError) and "nobody" in str(error)
    assert not OrchestrationRun.objects.exists()
