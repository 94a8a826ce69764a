"""Provider health (PROTOCOL.md §11, ops stream): outcomes add up to healthy → degraded → down and
back, each change published once; a rate limit raises a system alert at most once a minute."""

from __future__ import annotations

import pytest

from campaigns.tests.factories import CampaignFactory
from eventlog.models import StreamEvent
from orchestration import health, services
from orchestration.models import ProviderHealth, RunState
from orchestration.tests.conftest import wait_for_run


def ops_events(event: str | None = None) -> list[StreamEvent]:
    events = StreamEvent.objects.filter(stream__kind="ops").order_by("sequence")
    return list(events.filter(event=event) if event else events)


def changes() -> list[tuple[str, str]]:
    return [(e.data["previous_status"], e.data["status"]) for e in ops_events("provider.health_changed")]


def test_down_after_three_failures_and_back_through_degraded(db):
    for kind in (health.ERROR, health.TIMEOUT):
        health.record_outcome("openai", kind)
    assert changes() == [("healthy", "degraded")]
    health.record_outcome("openai", health.ERROR)
    assert changes()[-1] == ("degraded", "down")
    assert "The last 3 requests failed" in ops_events("provider.health_changed")[-1].data["message"]
    health.record_outcome("openai", health.OK)
    assert changes()[-1] == ("down", "degraded")
    for _ in range(health.OUTCOMES_KEPT - 1):
        health.record_outcome("openai", health.OK)
    assert changes() == [("healthy", "degraded"), ("degraded", "down"), ("down", "degraded"), ("degraded", "healthy")]
    assert ProviderHealth.objects.get(provider="openai").status == "healthy"
    assert len(ProviderHealth.objects.get(provider="openai").outcomes) == health.OUTCOMES_KEPT


def test_a_rate_limit_alerts_once_a_minute(db):
    for _ in range(3):
        health.record_outcome("openai", health.RATE_LIMITED)
    [alert] = ops_events("system.alert")
    assert alert.data == {
        "level": "warning",
        "message": "The openai provider is rate limiting requests (HTTP 429); steps are retrying.",
        "source": "provider:openai",
    }


def test_each_provider_has_its_own_health(db):
    for _ in range(3):
        health.record_outcome("openai", health.ERROR)
    health.record_outcome("template", health.OK)
    assert dict(ProviderHealth.objects.values_list("provider", "status")) == {"openai": "down", "template": "healthy"}


@pytest.mark.e2e
def test_a_rate_limited_provider_shows_on_the_ops_stream_and_the_run_completes(start_worker):
    from orchestration.tests.fake_openai import FakeOpenAI

    with FakeOpenAI([429, 429, 429, "ok"]) as fake:
        start_worker(
            AGENT_PROVIDER="openai",
            OPENAI_BASE_URL=fake.base_url,
            OPENAI_MODEL="local",
            AGENT_RETRY_BASE_MS="50",
            AGENT_RETRY_MAX_MS="100",
        )
        campaign = CampaignFactory()
        run = wait_for_run(services.run_start(campaign=campaign, created_by=campaign.owner))
    assert run.state == RunState.COMPLETED
    assert changes()[:3] == [("healthy", "degraded"), ("degraded", "down"), ("down", "degraded")]
    assert [e.data["source"] for e in ops_events("system.alert")] == ["provider:openai"]
