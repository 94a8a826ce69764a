"""What an agent asks a provider, and what comes back: text pieces, then the token usage."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol


class ProviderError(Exception):
    """A provider failure; the message is shown to people, so it never carries secrets or internals."""


class TransientProviderError(ProviderError):
    """Worth retrying: rate limits, server errors, timeouts, broken streams."""


class RateLimitedProviderError(TransientProviderError):
    """The provider answered 429: retried like any transient error, and reported to operators."""


class ProviderTimeoutError(TransientProviderError):
    """The provider did not answer in time."""


class PermanentProviderError(ProviderError):
    """Retrying will not help: a refused request, a bad key, an unknown model."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal


@dataclass
class ProviderRequest:
    agent: str
    messages: list[dict[str, str]]
    # Structured inputs for providers that do not read prose (the template provider).
    context: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    # The step's simulation settings: {"fail_times": n, "delay_ms": n, "fail_permanently": bool}.
    simulation: dict[str, Any] = field(default_factory=dict)
    # How a provider pauses (between chunks, or a simulated delay). A step passes one that keeps its
    # lease while it waits, so a pause longer than the lease does not hand the step to another worker.
    wait: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)


class Provider(Protocol):
    name: str

    def stream(self, request: ProviderRequest) -> Iterator[str | Usage]:
        """Yield text pieces as they arrive, then exactly one ``Usage``."""

    def price(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """What this many tokens cost, in US dollars."""


def estimate_tokens(text: str) -> int:
    """About four characters a token, the usual rule of thumb for English text."""
    return tokens_for_chars(len(text))


def tokens_for_chars(chars: int) -> int:
    return max(1, round(chars / 4)) if chars else 0


def price(prompt_tokens: int, completion_tokens: int, prompt_per_1k: Decimal, completion_per_1k: Decimal) -> Decimal:
    cost = (Decimal(prompt_tokens) * prompt_per_1k + Decimal(completion_tokens) * completion_per_1k) / 1000
    return cost.quantize(Decimal("0.000001"))
