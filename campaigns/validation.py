"""Rules for campaign and run settings, attached to the model fields so every door applies them."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError

from campaigns.steps import STEP_NAMES

SETTINGS_MAX_BYTES = 16 * 1024
# How a run's generation steps are scheduled: "parallel" (the default: a step starts as soon as the
# steps it needs are done: ShortCopy and Visual together after the Copy) or "sequential" (one at a time,
# in the plan's order).
STRATEGIES = ("parallel", "sequential")
SIMULATION_STEPS = STEP_NAMES
SIMULATION_KEYS = {"fail_times": (0, 20), "delay_ms": (0, 600_000)}
SIMULATION_DISABLED = (
    "simulate is disabled on this server (a switch for tests and demos, turned on with ORCHESTRATION_SIMULATION); "
    "leave it out of settings."
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_simulate(value: Any) -> list[str]:
    if not isinstance(value, dict):
        return ["simulate must be an object keyed by step (Copy, ShortCopy, Visual, audit)."]
    errors = []
    for step, spec in value.items():
        if step not in SIMULATION_STEPS:
            errors.append(f"simulate: unknown step {step!r}; use one of {', '.join(SIMULATION_STEPS)}.")
            continue
        if not isinstance(spec, dict):
            errors.append(f"simulate.{step} must be an object.")
            continue
        for key, item in spec.items():
            if key == "fail_permanently":
                if not isinstance(item, bool):
                    errors.append(f"simulate.{step}.fail_permanently must be true or false.")
            elif key in SIMULATION_KEYS:
                low, high = SIMULATION_KEYS[key]
                if not _is_int(item) or not low <= item <= high:
                    errors.append(f"simulate.{step}.{key} must be an integer from {low} to {high}.")
            else:
                errors.append(f"simulate.{step}: unknown key {key!r}; use fail_times, delay_ms or fail_permanently.")
    return errors


def _check_key(key: str, value: Any) -> list[str]:
    if key == "require_approval":
        return [] if isinstance(value, bool) else ["require_approval must be true or false."]
    if key == "max_tokens":
        return [] if _is_int(value) and value > 0 else ["max_tokens must be a positive integer."]
    if key == "max_cost":
        return [] if _is_number(value) and value >= 0 else ["max_cost must be a number of at least 0."]
    if key == "strategy":
        return (
            [] if isinstance(value, str) and value in STRATEGIES else ['strategy must be "parallel" or "sequential".']
        )
    if key == "simulate":
        # Failures and delays on demand tie up workers: only where the operator turned them on.
        return _check_simulate(value) if django_settings.ORCHESTRATION_SIMULATION else [SIMULATION_DISABLED]
    return [f"unknown setting {key!r}; allowed: require_approval, max_tokens, max_cost, strategy, simulate."]


def validate_settings(value: Any) -> None:
    """Raise ``ValidationError`` listing every problem with a settings object."""
    if not isinstance(value, dict):
        raise ValidationError("settings must be a JSON object.")
    if len(json.dumps(value).encode()) > SETTINGS_MAX_BYTES:
        raise ValidationError(f"settings must be at most {SETTINGS_MAX_BYTES // 1024} KB of JSON.")
    errors = [message for key, item in value.items() for message in _check_key(key, item)]
    if errors:
        raise ValidationError(errors)
