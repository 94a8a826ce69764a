from __future__ import annotations

from orchestration.agents.base import AgentContext, Draft, WritingAgent
from orchestration.agents.visual import VisualDesigner
from orchestration.agents.writers import Copywriter, ShortCopywriter

WRITERS: dict[str, WritingAgent] = {
    "Copy": Copywriter(),
    "ShortCopy": ShortCopywriter(),
    "Visual": VisualDesigner(),
}

__all__ = ["AgentContext", "Draft", "WritingAgent", "WRITERS"]
