"""Any OpenAI-compatible chat-completions endpoint, streamed (OpenAI, Azure OpenAI, vLLM, Ollama)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from orchestration.providers.base import (
    PermanentProviderError,
    ProviderRequest,
    ProviderTimeoutError,
    RateLimitedProviderError,
    TransientProviderError,
    Usage,
    estimate_tokens,
    price,
)


def _error_text(response: httpx.Response) -> str:
    """The provider's own error message, shortened; never the request (which holds the key)."""
    try:
        body = json.loads(response.read() or b"{}")
        message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("error")
    except (ValueError, AttributeError):
        message = None
    return str(message)[:200] if message else "no details"


class OpenAIProvider:
    name = "openai"

    def __init__(self) -> None:
        self.base_url = settings.OPENAI_BASE_URL.rstrip("/")
        self.model = settings.OPENAI_MODEL
        timeout = settings.OPENAI_TIMEOUT_SECONDS
        self.timeout = httpx.Timeout(timeout, connect=min(10, timeout))

    def price(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return price(
            prompt_tokens,
            completion_tokens,
            settings.OPENAI_PRICE_PROMPT_PER_1K,
            settings.OPENAI_PRICE_COMPLETION_PER_1K,
        )

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if settings.OPENAI_API_KEY:
            headers["Authorization"] = f"Bearer {settings.OPENAI_API_KEY}"
            if (urlsplit(self.base_url).hostname or "").endswith(".azure.com"):
                headers["api-key"] = settings.OPENAI_API_KEY
        return headers

    def _body(self, request: ProviderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        return body

    def stream(self, request: ProviderRequest) -> Iterator[str | Usage]:
        text, usage = [], None
        try:
            with (
                httpx.Client(timeout=self.timeout) as client,
                client.stream(
                    "POST", f"{self.base_url}/chat/completions", json=self._body(request), headers=self._headers()
                ) as response,
            ):
                self._check_status(response)
                for piece in self._events(response):
                    if isinstance(piece, dict):
                        usage = piece
                    else:
                        text.append(piece)
                        yield piece
        except httpx.TimeoutException:
            raise ProviderTimeoutError("The model provider timed out.") from None
        except httpx.TransportError:
            raise TransientProviderError("The model provider could not be reached.") from None
        yield self._usage(request, "".join(text), usage)

    def _check_status(self, response: httpx.Response) -> None:
        code = response.status_code
        if code == 429:
            raise RateLimitedProviderError(f"The model provider answered HTTP 429 ({_error_text(response)}).")
        if code >= 500:
            raise TransientProviderError(f"The model provider answered HTTP {code} ({_error_text(response)}).")
        if code >= 400:
            raise PermanentProviderError(
                f"The model provider refused the request: HTTP {code} ({_error_text(response)})."
            )

    def _events(self, response: httpx.Response) -> Iterator[str | dict[str, Any]]:
        """Parse the server-sent events; text deltas as str, the usage object as dict."""
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments (":") and other SSE fields
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError:
                raise TransientProviderError("The model provider sent a malformed stream.") from None
            if not isinstance(event, dict):
                raise TransientProviderError("The model provider sent a malformed stream.")
            if event.get("error"):
                raise TransientProviderError("The model provider reported an error mid-stream.")
            if isinstance(event.get("usage"), dict):
                yield event["usage"]
            for choice in event.get("choices") or []:
                content = (choice.get("delta") or {}).get("content") if isinstance(choice, dict) else None
                if content:
                    yield content
        raise TransientProviderError("The model provider's stream ended before it was complete.")

    def _usage(self, request: ProviderRequest, text: str, usage: dict[str, Any] | None) -> Usage:
        if usage and isinstance(usage.get("prompt_tokens"), int) and isinstance(usage.get("completion_tokens"), int):
            prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
        else:  # servers that ignore stream_options: estimate
            prompt = sum(estimate_tokens(m["content"]) for m in request.messages)
            completion = estimate_tokens(text)
        return Usage(prompt, completion, self.price(prompt, completion))
