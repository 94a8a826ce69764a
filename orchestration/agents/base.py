"""Agents turn a campaign's inputs into a provider request, and the provider's text into an artifact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestration.providers.base import ProviderRequest


@dataclass
class AgentContext:
    """Everything an agent may use: the campaign, the source copy, guidance from people."""

    name: str
    brief: str
    audience: str
    tone: str
    copy: str = ""  # the latest Copy, for agents that derive from it
    instructions: str = ""  # a revision's instructions or a rejection's comment
    previous: str = ""  # the version being revised, if any

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "brief": self.brief,
            "audience": self.audience,
            "tone": self.tone,
            "copy": self.copy,
            "instructions": self.instructions,
            "previous": self.previous,
        }


@dataclass(frozen=True)
class Draft:
    content: str
    metadata: dict[str, Any]


class WritingAgent:
    """An agent that streams text from a provider: subclasses set the prompt and finish the draft."""

    name = ""
    kind = ""
    thought = ""
    system_prompt = ""

    def user_prompt(self, ctx: AgentContext) -> str:
        raise NotImplementedError

    def request(self, ctx: AgentContext, *, attempt: int, simulation: dict[str, Any]) -> ProviderRequest:
        prompt = self.user_prompt(ctx)
        if ctx.previous:
            prompt += f"\n\nThe current version is:\n{ctx.previous}"
        if ctx.instructions:
            prompt += f"\n\nApply this feedback from the marketing team: {ctx.instructions}"
        return ProviderRequest(
            agent=self.name,
            messages=[{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}],
            context={**ctx.as_dict(), "kind": self.kind},
            attempt=attempt,
            simulation=simulation,
        )

    def finish(self, text: str, ctx: AgentContext) -> Draft:
        return Draft(content=text.strip(), metadata={"format": "text/plain", "characters": len(text.strip())})


def campaign_facts(ctx: AgentContext) -> str:
    return (
        f"Campaign: {ctx.name}\nBrief: {ctx.brief}\nAudience: {ctx.audience or 'general'}\n"
        f"Tone: {ctx.tone or 'friendly'}"
    )
