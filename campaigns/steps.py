"""The step names, in one place: the three artifact types and the audit. A run's plan lists them,
artifacts are typed by them, ``settings.simulate`` is keyed by them (no Django import here, so every
module can use them, the settings validation included)."""

from __future__ import annotations

COPY, SHORT_COPY, VISUAL, AUDIT = "Copy", "ShortCopy", "Visual", "audit"
ARTIFACT_STEPS = (COPY, SHORT_COPY, VISUAL)  # each writes an artifact of that type
STEP_NAMES = (*ARTIFACT_STEPS, AUDIT)
