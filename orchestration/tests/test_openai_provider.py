"""The openai provider against a local server that speaks the streaming chat-completions protocol."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from orchestration.providers.base import PermanentProviderError, ProviderRequest, TransientProviderError, Usage
from orchestration.providers.openai import OpenAIProvider
from orchestration.tests.fake_openai import REPLY, FakeOpenAI

SECRET = "sk-test-a-very-secret-key"


@pytest.fixture
def configured(settings):
    def configure(fake: FakeOpenAI) -> OpenAIProvider:
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_API_KEY = SECRET
        settings.OPENAI_MODEL = "local-model"
        settings.OPENAI_TIMEOUT_SECONDS = 2
        settings.OPENAI_PRICE_PROMPT_PER_1K = Decimal("0.5")
        settings.OPENAI_PRICE_COMPLETION_PER_1K = Decimal("1.5")
        return OpenAIProvider()

    return configure


def request() -> ProviderRequest:
    return ProviderRequest(agent="copywriter", messages=[{"role": "user", "content": "Write the copy."}])


def test_streams_text_then_usage_from_the_stream(configured):
    with FakeOpenAI(["ok"]) as fake:
        items = list(configured(fake).stream(request()))
    text = "".join(item for item in items if isinstance(item, str))
    assert text == REPLY
    assert len([item for item in items if isinstance(item, str)]) > 10, "streamed in pieces"
    usage = items[-1]
    assert isinstance(usage, Usage)
    words = len(REPLY.split(" "))
    assert (usage.prompt_tokens, usage.completion_tokens) == (42, words)
    assert usage.cost == (Decimal(42) * Decimal("0.5") + Decimal(words) * Decimal("1.5")) / 1000
    sent = fake.requests[0]
    assert sent["stream"] is True and sent["model"] == "local-model"
    assert sent["messages"] == [{"role": "user", "content": "Write the copy."}]
    assert fake.headers[0]["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limits_and_server_errors_are_transient(configured, status):
    with FakeOpenAI([status]) as fake, pytest.raises(TransientProviderError, match=f"HTTP {status}"):
        list(configured(fake).stream(request()))


@pytest.mark.parametrize("status", [400, 401, 404])
def test_other_client_errors_are_permanent(configured, status, caplog):
    with FakeOpenAI([status]) as fake, pytest.raises(PermanentProviderError) as error:
        with caplog.at_level(logging.DEBUG):
            list(configured(fake).stream(request()))
    assert f"HTTP {status}" in str(error.value)
    assert SECRET not in str(error.value) and SECRET not in caplog.text


def test_a_malformed_stream_is_transient(configured):
    with FakeOpenAI(["malformed"]) as fake, pytest.raises(TransientProviderError, match="malformed"):
        list(configured(fake).stream(request()))


def test_a_stream_cut_short_is_transient(configured):
    with FakeOpenAI(["truncated"]) as fake, pytest.raises(TransientProviderError, match="ended before"):
        list(configured(fake).stream(request()))


def test_a_timeout_is_transient(configured):
    with FakeOpenAI(["slow"]) as fake, pytest.raises(TransientProviderError, match="timed out"):
        list(configured(fake).stream(request()))


def test_an_unreachable_endpoint_is_transient(configured, settings):
    with FakeOpenAI() as fake:
        provider = configured(fake)
    provider.base_url = "http://127.0.0.1:1/v1"
    with pytest.raises(TransientProviderError, match="could not be reached"):
        list(provider.stream(request()))
