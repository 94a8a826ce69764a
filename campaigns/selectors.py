"""Reads of campaigns, always scoped to what the caller may see."""

from __future__ import annotations

import re
from typing import Any

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


def campaigns_get_visible_many(requests: list[tuple[AbstractBaseUser, str]]) -> list[Campaign | None]:
    """For each (user, public id), the campaign if that user may see it, else None, in order: one
    query per distinct user (the realtime tier asks this for thousands of sockets at once,
    marketing_agents/batching.py). Users are told apart by their rights as well as their id: two
    sockets of one user, opened before and after they lost staff rights, are answered each by its own."""
    asked: dict[tuple[Any, bool], tuple[AbstractBaseUser, list[str]]] = {}
    for user, public_id in requests:
        if is_public_id(public_id):
            asked.setdefault((user.pk, user.is_staff), (user, []))[1].append(public_id)
    found = {}
    for (pk, is_staff), (user, public_ids) in asked.items():
        for campaign in campaigns_visible_to(user).filter(public_id__in=public_ids):
            found[(pk, is_staff, campaign.public_id)] = campaign
    return [found.get((user.pk, user.is_staff, public_id)) for user, public_id in requests]
