"""The copywriter and the short copywriter."""

from __future__ import annotations

from orchestration.agents.base import AgentContext, WritingAgent, campaign_facts


class Copywriter(WritingAgent):
    name = "copywriter"
    kind = "copy"
    thought = "Reading the brief and drafting the long copy: headline, story, benefits, call to action."
    system_prompt = (
        "You are a senior marketing copywriter. Write clear, honest long-form copy (150-300 words) with a "
        "headline, a short story, three benefits and a call to action. Never promise guaranteed results, "
        "never claim cures, and add the legally needed disclaimer for financial or health products."
    )

    def user_prompt(self, ctx: AgentContext) -> str:
        return f"{campaign_facts(ctx)}\n\nWrite the long copy."


class ShortCopywriter(WritingAgent):
    name = "short_copywriter"
    kind = "short_copy"
    thought = "Condensing the copy into a short social post under 280 characters."
    system_prompt = (
        "You are a social media copywriter. Condense the given copy into one post of at most 280 characters, "
        "with a call to action and one hashtag. No unsubstantiated claims."
    )

    def user_prompt(self, ctx: AgentContext) -> str:
        return f"{campaign_facts(ctx)}\n\nThe long copy:\n{ctx.copy}\n\nWrite the short copy."
