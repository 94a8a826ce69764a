"""The plan every generation run follows, and which steps each step waits for."""

from __future__ import annotations

from campaigns.steps import ARTIFACT_STEPS, AUDIT, COPY, SHORT_COPY, STEP_NAMES, VISUAL

STEP_AGENTS = {
    COPY: "copywriter",
    SHORT_COPY: "short_copywriter",
    VISUAL: "visual_designer",
    AUDIT: "compliance_auditor",
}
GENERATION_STEPS = ARTIFACT_STEPS
FULL_PLAN = STEP_NAMES

# ShortCopy and Visual are written from the copy; they run in parallel once it exists.
DEPENDS_ON = {COPY: (), SHORT_COPY: (COPY,), VISUAL: (COPY,), AUDIT: ()}

# Progress (0-100) reached when a step completes; the run's completion is 100.
PROGRESS_AT_START = 5
PROGRESS_WHEN_DONE = {COPY: 40, SHORT_COPY: 20, VISUAL: 20, AUDIT: 10}
