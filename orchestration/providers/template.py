"""The offline provider: deterministic, readable marketing copy built from the brief, streamed in chunks.

The same campaign always gets the same text, so runs are reproducible in tests and demos. It
honours the step's simulation settings (fail N times, fail for good, be slow) so failure paths can
be exercised on the real stack.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django.conf import settings

from orchestration.providers.base import (
    PermanentProviderError,
    ProviderRequest,
    TransientProviderError,
    Usage,
    estimate_tokens,
    price,
)

# Nominal prices so budgets can be tried offline (US$ per 1,000 tokens).
PROMPT_PER_1K = Decimal("0.0005")
COMPLETION_PER_1K = Decimal("0.0015")
WORDS_PER_CHUNK = 3

FINANCE_WORDS = (
    "invest",
    "loan",
    "credit",
    "mortgage",
    "savings",
    "interest rate",
    "returns",
    "crypto",
    "trading",
    "insurance",
    "pension",
    "bank",
)
HEALTH_WORDS = (
    "health",
    "supplement",
    "vitamin",
    "medical",
    "treatment",
    "therapy",
    "weight loss",
    "symptom",
    "clinic",
    "skin",
    "sleep aid",
    "pain",
)
FINANCE_DISCLAIMER = "Capital at risk. This is not financial advice; terms and conditions apply."
HEALTH_DISCLAIMER = "This product is not intended to diagnose, treat, cure or prevent any disease; consult your doctor."

TONES = {
    "friendly": {"open": "Say hello to", "cta": "Come and see what it can do for you.", "adj": "easy"},
    "professional": {"open": "Introducing", "cta": "Contact our team to learn more.", "adj": "reliable"},
    "formal": {"open": "We are pleased to present", "cta": "We invite you to learn more.", "adj": "dependable"},
    "playful": {"open": "Meet your new favourite thing:", "cta": "Go on, give it a spin.", "adj": "delightful"},
    "bold": {"open": "This is", "cta": "Make the move today.", "adj": "powerful"},
    "luxury": {"open": "Discover", "cta": "Reserve yours today.", "adj": "refined"},
    "calm": {"open": "Take a moment with", "cta": "Find out more when you are ready.", "adj": "gentle"},
}
PALETTES = [
    ("#0f766e", "#14b8a6", "#f0fdfa"),
    ("#1e3a8a", "#3b82f6", "#eff6ff"),
    ("#9a3412", "#f97316", "#fff7ed"),
    ("#581c87", "#a855f7", "#faf5ff"),
    ("#14532d", "#22c55e", "#f0fdf4"),
]


def mentions(text: str, words: tuple[str, ...]) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in words)


def _tone(tone: str) -> dict[str, str]:
    for name, voice in TONES.items():
        if name in tone.lower():
            return voice
    return TONES["friendly"]


def _first_sentence(text: str, limit: int = 220) -> str:
    sentence = re.split(r"(?<=[.!?])\s+", text.strip())[0].strip()
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0]
    return sentence.rstrip(".!?")


def _disclaimers(brief: str) -> list[str]:
    found = []
    if mentions(brief, FINANCE_WORDS):
        found.append(FINANCE_DISCLAIMER)
    if mentions(brief, HEALTH_WORDS):
        found.append(HEALTH_DISCLAIMER)
    return found


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _sentences(text: str) -> list[str]:
    return [part.strip().rstrip(".!?") for part in re.split(r"(?<=[.!?])\s+", text.strip()) if part.strip()]


def write_copy(ctx: dict[str, Any]) -> str:
    brief, name = ctx.get("brief", ""), ctx.get("name") or "our new campaign"
    audience = ctx.get("audience") or "people who want more from their day"
    voice = _tone(ctx.get("tone", ""))
    rng = random.Random(hashlib.sha256(f"{name}|{brief}|{audience}".encode()).digest())
    sentences = _sentences(brief) or [f"{name} is here"]
    adj = voice["adj"]
    benefits = [
        f"{_article(adj).capitalize()} {adj} choice, made with care from the first detail to the last.",
        f"Made for {audience}, and tested by people just like you.",
        "It fits the way you already live, so there is nothing new to learn.",
    ]
    benefits += [f"{extra}." for extra in sentences[1:3]]
    rng.shuffle(benefits)
    paragraphs = [
        f"{voice['open']} {name}",
        f"For {audience}, the details matter. {_first_sentence(brief) or sentences[0]}. "
        f"That is the promise behind {name}, and everything we made starts there.",
        "Why people choose it:\n" + "\n".join(f"- {line}" for line in benefits[:4]),
        f"{name} is ready when you are. {voice['cta']}",
    ]
    if ctx.get("instructions"):
        paragraphs.append(f"Revised as asked: {ctx['instructions'].strip()}")
    paragraphs.extend(_disclaimers(brief))
    return "\n\n".join(paragraphs)


def write_short_copy(ctx: dict[str, Any]) -> str:
    name = ctx.get("name") or "our new campaign"
    voice = _tone(ctx.get("tone", ""))
    tag = "#" + re.sub(r"[^A-Za-z0-9]", "", name.title())[:30]
    hook = _first_sentence(ctx.get("brief", ""), 120) or "Made for you"
    text = f"{name}: {hook[:1].lower() + hook[1:]}. {voice['cta']} {tag}"
    if ctx.get("instructions"):
        text = f"{text} ({ctx['instructions'].strip()[:60]})"
    if _disclaimers(ctx.get("brief", "")):
        text += " T&Cs apply."
    return text[:280]


def write_visual_concept(ctx: dict[str, Any]) -> str:
    name = ctx.get("name") or "Our new campaign"
    voice = _tone(ctx.get("tone", ""))
    digest = hashlib.sha256(f"{name}|{ctx.get('brief', '')}".encode()).digest()
    palette = PALETTES[digest[0] % len(PALETTES)]
    copy = ctx.get("copy", "")
    tagline = _first_sentence(copy.split("\n\n")[1] if "\n\n" in copy else ctx.get("brief", ""), 90)
    lines = [
        f"Headline: {name[:60]}",
        f"Tagline: {tagline}",
        f"Call to action: {voice['cta']}",
        f"Palette: {' '.join(palette)}",
    ]
    if ctx.get("instructions"):
        lines.append(f"Note: {ctx['instructions'].strip()[:80]}")
    return "\n".join(lines)


WRITERS = {"copy": write_copy, "short_copy": write_short_copy, "visual": write_visual_concept}


def chunks(text: str) -> list[str]:
    words = re.findall(r"\S+\s*", text)
    return ["".join(words[i : i + WORDS_PER_CHUNK]) for i in range(0, len(words), WORDS_PER_CHUNK)]


class TemplateProvider:
    name = "template"

    def price(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return price(prompt_tokens, completion_tokens, PROMPT_PER_1K, COMPLETION_PER_1K)

    def stream(self, request: ProviderRequest) -> Iterator[str | Usage]:
        simulation = request.simulation
        if simulation.get("fail_permanently"):
            raise PermanentProviderError("The provider refused the request (simulated permanent failure).")
        writer = WRITERS.get(request.context.get("kind", "copy"), write_copy)
        text = writer(request.context)
        delay = simulation.get("delay_ms", settings.AGENT_CHUNK_DELAY_MS) / 1000
        for index, piece in enumerate(chunks(text)):
            if index == 1 and request.attempt <= simulation.get("fail_times", 0):
                raise TransientProviderError("The provider is temporarily unavailable (simulated transient failure).")
            if delay:
                request.wait(delay)
            yield piece
        prompt = sum(estimate_tokens(m["content"]) for m in request.messages)
        completion = estimate_tokens(text)
        yield Usage(prompt, completion, self.price(prompt, completion))
