"""Reads of runs and artifacts, and of campaigns with their latest run, scoped to what the caller may see."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Case, IntegerField, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce

from campaigns.errors import NotFound
from campaigns.models import Campaign
from campaigns.selectors import campaign_get_visible, campaigns_visible_to, is_public_id
from orchestration.models import (
    ARTIFACT_ORDER,
    FINISHED_STATES,
    Artifact,
    OrchestrationPlan,
    OrchestrationRun,
    RunState,
)


def campaigns_with_latest_run(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Campaign]:
    """The caller's campaigns (staff: all), with the latest run's id (``latest_run_public_id``) and
    state (``state``, "idle" before the first run)."""
    latest_run = OrchestrationRun.objects.filter(campaign=OuterRef("pk")).order_by("-created_at", "-id")
    return campaigns_visible_to(user).annotate(
        latest_run_public_id=Subquery(latest_run.values("public_id")[:1]),
        state=Coalesce(Subquery(latest_run.values("state")[:1]), Value("idle")),
    )


def campaign_with_latest_run(user: AbstractBaseUser | AnonymousUser, public_id: str) -> Campaign:
    return campaign_get_visible(user, public_id, among=campaigns_with_latest_run(user))


def run_get_visible(user: AbstractBaseUser | AnonymousUser, public_id: str) -> OrchestrationRun:
    run = None
    if is_public_id(public_id):
        visible = campaigns_visible_to(user).values("pk")
        run = OrchestrationRun.objects.select_related("campaign").filter(public_id=public_id, campaign__in=visible)
        run = run.first()
    if run is None:
        raise NotFound("Run not found.")
    return run


def plan_get_visible(user: AbstractBaseUser | AnonymousUser, public_id: str) -> OrchestrationPlan:
    plan = None
    if is_public_id(public_id):
        visible = campaigns_visible_to(user).values("pk")
        plans = OrchestrationPlan.objects.select_related("campaign", "run")
        plan = plans.filter(public_id=public_id, campaign__in=visible).first()
    if plan is None:
        raise NotFound("Plan not found.")
    return plan


def runs_active(limit: int = 200) -> QuerySet[OrchestrationRun]:
    """Runs not finished yet, across all campaigns, newest first (the operators' view)."""
    return (
        OrchestrationRun.objects.exclude(state__in=FINISHED_STATES)
        .select_related("campaign", "campaign__owner")
        .order_by("-created_at")[:limit]
    )


def campaign_artifacts(campaign: Campaign, *, artifact_type: str | None = None) -> QuerySet[Artifact]:
    """Every version; the newest version of each type first (in plan order), then older ones."""
    newest = (
        Artifact.objects.filter(campaign=campaign, type=OuterRef("type")).order_by("-version").values("version")[:1]
    )
    type_rank = Case(
        *[When(type=kind, then=Value(rank)) for rank, kind in enumerate(ARTIFACT_ORDER)],
        output_field=IntegerField(),
    )
    queryset = (
        Artifact.objects.filter(campaign=campaign)
        .select_related("campaign", "run")
        .annotate(
            is_newest=Case(When(version=Subquery(newest), then=Value(1)), default=Value(0)),
            type_rank=type_rank,
        )
        .order_by("-is_newest", "type_rank", "-version")
    )
    return queryset.filter(type=artifact_type) if artifact_type else queryset


def runs_queued(owner_id: int) -> QuerySet[OrchestrationRun]:
    """An account's queued runs, next first (orchestration/fairshare.py)."""
    return OrchestrationRun.objects.filter(campaign__owner_id=owner_id, state=RunState.QUEUED).order_by(
        "queue_ticket", "pk"
    )


def queue_position(run: OrchestrationRun) -> int | None:
    """1 for the next of its account's runs to start; None unless the run is queued."""
    if run.state != RunState.QUEUED:
        return None
    ahead = Q(queue_ticket__lt=run.queue_ticket) | Q(queue_ticket=run.queue_ticket, pk__lt=run.pk)
    return runs_queued(run.campaign.owner_id).filter(ahead).count() + 1
