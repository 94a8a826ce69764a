"""The live campaign page in a real headless Chromium (Debian's), against daphne, a worker, Redis, PostgreSQL."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.conf import settings

from campaigns.models import Campaign
from campaigns.tests.factories import PASSWORD, CampaignFactory, UserFactory
from eventlog.models import CampaignEvent
from orchestration.models import ComplianceAudit, RunState
from orchestration.tests.conftest import wait_for_run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
SLOW = "20000"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the test's own ORM calls
    # (setting up rows, reading the log) are still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield instance
        instance.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    context.set_default_timeout(float(SLOW))
    page = context.new_page()
    yield page
    context.close()


def log_in(page, server, username: str) -> None:
    page.goto(f"{server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/campaigns/$"))


def page_sequences(page) -> list[int]:
    return [int(value) for value in page.eval_on_selector_all("#log li", "items => items.map(i => i.dataset.sequence)")]


def log_sequences(campaign: Campaign) -> list[int]:
    return list(CampaignEvent.objects.filter(campaign=campaign).order_by("sequence").values_list("sequence", flat=True))


def test_create_a_campaign_start_a_run_and_watch_it_complete(page, start_web, start_worker):
    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="15")
    UserFactory(username="alice")
    log_in(page, server, "alice")
    page.fill("#id_name", "Spring launch")
    page.fill("#id_brief", "Launch our reusable water bottle to commuters who care about the planet.")
    page.fill("#id_audience", "urban commuters")
    page.fill("#id_tone", "friendly")
    page.click("text=Create campaign")
    page.wait_for_selector("#connection.connection-connected")
    assert page.inner_text("#state") == "idle"
    page.click("#start")
    # The copy grows chunk by chunk before the final artifact replaces it.
    page.wait_for_selector("#Copy .streaming")
    first = len(page.inner_text("#Copy .streaming"))
    page.wait_for_function(f"document.querySelector('#Copy .streaming, #Copy .final').textContent.length > {first}")
    page.wait_for_selector("#Copy .final")
    page.wait_for_selector("#ShortCopy .final")
    page.wait_for_selector("#Visual img")
    page.wait_for_selector("#compliance .verdict")
    page.wait_for_function("document.querySelector('#state').textContent === 'completed'")
    assert "urban commuters" in page.inner_text("#Copy .final")
    assert page.get_attribute("#progress", "aria-valuenow") == "100"
    assert page.get_attribute("#Visual img", "src").startswith("data:image/svg+xml")
    campaign = Campaign.objects.get(name="Spring launch")
    audit = ComplianceAudit.objects.get(campaign=campaign)
    assert page.inner_text("#compliance .verdict") == ("Compliant" if audit.is_compliant else "Not compliant")
    assert page_sequences(page) == log_sequences(campaign)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live-page.png"), full_page=True)


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_the_page_reconnects_after_a_server_restart_and_misses_nothing(page, start_web, start_worker, transport):
    """The web server goes away mid-run. On the WebSocket the page's client reconnects with backoff and
    resumes; on server-sent events (as where a proxy blocks WebSockets) EventSource reconnects by
    itself with Last-Event-ID. Either way the page's log equals the database's."""
    from marketing_agents.tests.processes import WebServer

    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="10")
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(
        owner=alice, settings={"simulate": {"ShortCopy": {"delay_ms": 60}, "Visual": {"delay_ms": 60}}}
    )
    log_in(page, server, "alice")
    page.goto(f"{server.url}/campaigns/{campaign.public_id}/" + ("?transport=sse" if transport == "sse" else ""))
    page.wait_for_selector("#connection.connection-connected")
    assert page.evaluate("window.campaignClient.transport") == transport
    page.click("#start")
    page.wait_for_selector("#Copy .final")
    server.stop()  # the web server goes away mid-run
    page.wait_for_selector("#connection.connection-reconnecting")
    if transport == "websocket":
        page.wait_for_function("document.querySelector('#connection').textContent.includes('next try in')")
    restarted = WebServer(server.log_path.parent, port=server.port).start()
    try:
        page.wait_for_selector("#connection.connection-connected", timeout=60000)
        page.wait_for_function("document.querySelector('#state').textContent === 'completed'", timeout=60000)
        sequences = page_sequences(page)
        assert sequences == sorted(set(sequences)), "no duplicate in the page's log"
        assert sequences == log_sequences(campaign), "no missing event"
        if transport == "sse":
            # The page opened the stream with last_sequence=0; a resume from later came from Last-Event-ID.
            resumed = re.search(rf"resumes {campaign.public_id} from ([0-9]+)", restarted.log())
            assert resumed and int(resumed.group(1)) > 0, restarted.log()[-2000:]
    finally:
        restarted.stop()


def test_cancel_a_run_from_the_page(page, start_web, start_worker):
    server = start_web()
    start_worker()
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(owner=alice, settings={"simulate": {"Copy": {"delay_ms": 200}}})
    log_in(page, server, "alice")
    page.goto(f"{server.url}/campaigns/{campaign.public_id}/")
    page.wait_for_selector("#connection.connection-connected")
    page.click("#start")
    page.wait_for_selector("#Copy .streaming")
    page.click("#cancel")
    page.wait_for_function("document.querySelector('#state').textContent === 'cancelled'")
    assert "cancelled by alice" in page.inner_text("#message")
    assert campaign.runs.get().state == RunState.CANCELLED


def test_approve_a_run_waiting_for_approval(page, start_web, start_worker):
    server = start_web()
    start_worker()
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(owner=alice, settings={"require_approval": True})
    log_in(page, server, "alice")
    page.goto(f"{server.url}/campaigns/{campaign.public_id}/")
    page.wait_for_selector("#connection.connection-connected")
    page.click("#start")
    page.wait_for_selector("#approval:not([hidden])")
    assert page.inner_text("#state") == "awaiting approval"
    page.click("#approve")
    page.wait_for_function("document.querySelector('#state').textContent === 'completed'")
    assert page.is_hidden("#approval")
    assert wait_for_run(campaign.runs.get()).state == RunState.COMPLETED


def test_a_queued_run_shows_its_place_and_starts_when_the_run_ahead_finishes(page, start_web, settings):
    from orchestration import services

    settings.RUNS_MAX_ACTIVE_PER_USER = 1  # the run ahead is cancelled from this process
    server = start_web(RUNS_MAX_ACTIVE_PER_USER="1")
    alice = UserFactory(username="alice")
    ahead = services.run_start(campaign=CampaignFactory(owner=alice), created_by=alice)
    campaign = CampaignFactory(owner=alice)
    log_in(page, server, "alice")
    page.goto(f"{server.url}/campaigns/{campaign.public_id}/")
    page.wait_for_selector("#connection.connection-connected")
    page.click("#start")
    page.wait_for_function("document.querySelector('#state').textContent === 'queued: next in line'")
    page.reload()
    page.wait_for_selector("#connection.connection-connected")
    assert page.inner_text("#state") == "queued: next in line"

    services.run_cancel(run=ahead, requested_by=alice)

    page.wait_for_function("document.querySelector('#state').textContent === 'pending'")
    assert campaign.runs.get().state == RunState.PENDING  # no worker here: it waits for one to begin it


def test_a_second_user_cannot_open_the_first_users_campaign(page, start_web):
    server = start_web()
    alice = UserFactory(username="alice")
    UserFactory(username="bob")
    campaign = CampaignFactory(owner=alice)
    log_in(page, server, "bob")
    response = page.goto(f"{server.url}/campaigns/{campaign.public_id}/")
    assert response.status == 404
    assert campaign.name not in page.content()


def test_the_live_page_shows_the_accounts_spend_against_its_budget_live(page, start_web):
    from decimal import Decimal

    from django.db.models import F
    from django.utils import timezone

    from accounts.models import MonthlySpend
    from accounts.services import account_update, spend_record

    server = start_web()
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(owner=alice)
    account_update(user_id=alice.pk, monthly_budget=Decimal("2"))
    spend_record(user_id=alice.pk, cost=Decimal("0.5"))
    log_in(page, server, "alice")
    page.goto(f"{server.url}/campaigns/{campaign.public_id}/")
    page.wait_for_selector("#connection.connection-connected")
    assert page.inner_text("#spend") == "Spend this month: $0.5000 of $2.00 (25 %)"
    # A second later (moved, not slept through), a run reports more: one spend.updated and the 50 % alert.
    MonthlySpend.objects.update(announced_at=F("announced_at") - timezone.timedelta(seconds=2))
    spend_record(user_id=alice.pk, cost=Decimal("0.6"))
    page.wait_for_function("document.querySelector('#spend').textContent.endsWith('$1.1000 of $2.00 (55 %)')")
    page.wait_for_function("document.querySelector('#message').textContent.includes('Budget alert: 50 %')")


def test_the_console_shows_provider_health_and_the_ops_stream_live(page, start_web):
    from orchestration import health

    server = start_web()
    UserFactory(username="charlie", is_staff=True, is_superuser=True)
    health.record_outcome("openai", health.ERROR)
    log_in(page, server, "charlie")
    page.goto(f"{server.url}/console/")
    assert page.inner_text("#providers tr[data-provider=openai] .badge") == "healthy"
    page.wait_for_function("document.querySelector('#ops-connection').textContent === 'connected'")
    health.record_outcome("openai", health.RATE_LIMITED)
    health.record_outcome("openai", health.TIMEOUT)
    page.wait_for_function(
        "document.querySelector('#providers tr[data-provider=openai] .badge').textContent === 'down'"
    )
    events = page.inner_text("#ops-events")
    assert "openai is down" in events and "openai is degraded" in events and "rate limiting" in events


def test_the_conversation_panel_sends_a_message_streams_the_answer_and_decides_tools(page, start_web, start_worker):
    from orchestration import services
    from orchestration.models import Artifact

    server = start_web()
    start_worker(AGENT_CHUNK_DELAY_MS="15")
    alice = UserFactory(username="alice")
    campaign = CampaignFactory(owner=alice)
    log_in(page, server, "alice")
    page.goto(f"{server.url}/campaigns/{campaign.public_id}/")
    page.wait_for_selector("#connection.connection-connected")

    # A message: shown at once, its answer streams, then the whole new version.
    page.select_option("#message-agent", "copywriter")
    page.fill("#message-content", "Make it punchier")
    page.click("#send-message")
    page.wait_for_selector("#conversation .said")
    assert page.inner_text("#conversation .said") == "alice → copywriter: Make it punchier"
    page.wait_for_selector("#conversation .answer.streaming")
    page.wait_for_selector("#conversation .answer[data-artifact-id]")
    answer_id = page.get_attribute("#conversation .answer", "data-artifact-id")
    artifact = Artifact.objects.get(public_id=answer_id)
    assert artifact.type == "Copy" and artifact.version == 1
    assert page.inner_text("#conversation .answer .what") == artifact.content
    assert page.input_value("#message-content") == ""
    wait_for_run(artifact.run)

    # A message while a run is active: refused, and said why.
    services.run_start(campaign=campaign, created_by=alice, settings={})
    page.wait_for_function("document.querySelector('#state').textContent !== 'completed'")
    page.fill("#message-content", "And shorter")
    page.click("#send-message")
    page.wait_for_function("document.querySelector('#message').textContent.includes('active run')")
    assert page.locator("#conversation .said").count() == 1
    wait_for_run(campaign.runs.order_by("-created_at").first())

    # A tool asked for elsewhere (the hub, the API) waits on the page: approved, it runs.
    tool_run = services.tool_execute(
        campaign=campaign,
        agent="short_copywriter",
        tool_name="generate_short_copy",
        parameters={"instructions": "Three posts"},
        require_approval=True,
        requested_by=alice,
    )
    page.wait_for_selector("#approval:not([hidden])")
    assert page.inner_text("#approval-tool") == (
        "The short_copywriter asks to run generate_short_copy with the instructions: “Three posts”."
    )
    assert page.is_hidden("#approval-type-field")
    page.click("#approve")
    page.wait_for_function("document.querySelector('#state').textContent === 'completed'")
    assert wait_for_run(tool_run).state == RunState.COMPLETED

    # Another, rejected with a reason: cancelled.
    rejected = services.tool_execute(
        campaign=campaign,
        agent="visual_designer",
        tool_name="generate_visual",
        parameters={},
        require_approval=True,
        requested_by=alice,
    )
    page.wait_for_selector("#approval:not([hidden])")
    page.fill("#approval-comment", "Not this week")
    page.click("#reject")
    page.wait_for_function("document.querySelector('#state').textContent === 'cancelled'")
    rejected.refresh_from_db()
    assert rejected.state == RunState.CANCELLED and rejected.error == "Rejected by alice: Not this week"

    # The conversation is there again after a reload, from the log.
    page.reload()
    page.wait_for_selector("#connection.connection-connected")
    assert page.inner_text("#conversation .said") == "alice → copywriter: Make it punchier"
    assert page.inner_text("#conversation .answer .what") == artifact.content
