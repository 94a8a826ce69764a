"""Opaque public identifiers: a prefix and 16 URL-safe random characters (96 bits)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(12)}"


def campaign_id() -> str:
    return new_id("camp")


def run_id() -> str:
    return new_id("run")


def artifact_id() -> str:
    return new_id("art")


def approval_id() -> str:
    return new_id("apr")


def plan_id() -> str:
    return new_id("plan")
