"""Writes to campaigns. Every door (REST, admin, pages) goes through these (deleting one is
orchestration's: ``orchestration.services.campaign_delete`` checks for an active run first)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from campaigns.models import Campaign

EDITABLE_FIELDS = ("name", "brief", "audience", "tone", "settings")


@transaction.atomic
def campaign_create(
    *,
    owner: AbstractBaseUser,
    name: str,
    brief: str,
    audience: str = "",
    tone: str = "",
    settings: dict[str, Any] | None = None,
) -> Campaign:
    campaign = Campaign(owner=owner, name=name, brief=brief, audience=audience, tone=tone, settings=settings or {})
    campaign.full_clean()
    campaign.save()
    return campaign


@transaction.atomic
def campaign_update(*, campaign: Campaign, **changes: Any) -> Campaign:
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    for field, value in changes.items():
        setattr(campaign, field, value)
    campaign.full_clean()
    campaign.save(update_fields=[*changes, "updated_at"])
    return campaign
