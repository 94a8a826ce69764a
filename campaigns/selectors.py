"""Reads of campaigns, always scoped to what the caller may see."""

from __future__ import annotations

import re

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from campaigns.errors import NotFound
from campaigns.models import Campaign

PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def campaigns_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Campaign]:
    """The caller's campaigns (staff: all)."""
    if not user.is_authenticated:
        return Campaign.objects.none()
    queryset = Campaign.objects.select_related("owner")
    return queryset if user.is_staff else queryset.filter(owner=user)


def is_public_id(value: object) -> bool:
    """Ids are short URL-safe strings; anything else (a NUL byte, a number) cannot name an object."""
    return isinstance(value, str) and PUBLIC_ID.fullmatch(value) is not None


def campaign_get_visible(
    user: AbstractBaseUser | AnonymousUser, public_id: str, *, among: QuerySet[Campaign] | None = None
) -> Campaign:
    """The caller's campaign of that id, from ``among`` (an annotated ``campaigns_visible_to``) if given."""
    visible = campaigns_visible_to(user) if among is None else among
    campaign = visible.filter(public_id=public_id).first() if is_public_id(public_id) else None
    if campaign is None:
        raise NotFound("Campaign not found.")
    return campaign
