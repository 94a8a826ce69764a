from __future__ import annotations

from campaigns.steps import COPY, SHORT_COPY, VISUAL
from orchestration.agents.base import AgentContext, Draft, WritingAgent
from orchestration.agents.visual import VisualDesigner
from orchestration.agents.writers import Copywriter, ShortCopywriter

WRITERS: dict[str, WritingAgent] = {
    COPY: Copywriter(),
    SHORT_COPY: ShortCopywriter(),
    VISUAL: VisualDesigner(),
}

__all__ = ["AgentContext", "Draft", "WritingAgent", "WRITERS"]
