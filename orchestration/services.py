"""The run lifecycle: start, begin, cancel, retry, approve or reject, revise, recover.

REST views, admin actions, WebSocket consumers, management commands and Celery tasks all call
these, so a rule holds whichever door a request came in by.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.selectors import budget_refusal
from campaigns.errors import Conflict, NotFound, ServiceError
from campaigns.models import Campaign
from campaigns.selectors import is_public_id
from campaigns.validation import validate_settings
from orchestration import events, queue
from orchestration import plan as plan_
from orchestration.lifecycle import (
    computed_progress,
    dispatch,
    locked_run,
    queue_step,
    set_progress,
    set_state,
    stop_active_steps,
    thought,
)
from orchestration.models import (
    FINISHED_STATES,
    WORKING_STATES,
    Approval,
    ApprovalState,
    Artifact,
    OrchestrationRun,
    RunKind,
    RunState,
    RunStep,
    StepStatus,
)

logger = logging.getLogger(__name__)

ACTIVE_RUN_CONFLICT = "This campaign already has an active run; wait for it to finish or cancel it."


def _username(user: AbstractBaseUser | None) -> str:
    return user.get_username() if user is not None else "system"


def _create_run(
    *,
    campaign: Campaign,
    steps: tuple[str, ...],
    kind: str,
    run_settings: dict[str, Any],
    created_by: AbstractBaseUser | None,
    instructions: str = "",
) -> OrchestrationRun:
    try:
        validate_settings(run_settings)
    except ValidationError as exc:
        raise ValidationError({"settings": exc.messages}) from None
    refusal = budget_refusal(campaign.owner_id)
    if refusal:
        raise Conflict(refusal)
    run = OrchestrationRun(
        campaign=campaign,
        kind=kind,
        plan=list(steps),
        settings={**campaign.settings, **run_settings},
        created_by=created_by,
    )
    try:
        with transaction.atomic():
            run.save()
    except IntegrityError:
        raise Conflict(ACTIVE_RUN_CONFLICT) from None
    RunStep.objects.bulk_create(
        RunStep(
            run=run,
            name=name,
            agent=plan_.STEP_AGENTS[name],
            position=position,
            instructions=instructions if name != plan_.AUDIT else "",
        )
        for position, name in enumerate(steps)
    )
    events.state_changed(run, RunState.PENDING, None)
    queue.begin_run(run.pk)
    return run


@transaction.atomic
def run_start(
    *, campaign: Campaign, created_by: AbstractBaseUser | None, settings: dict[str, Any] | None = None
) -> OrchestrationRun:
    """Start a generation run of the whole plan (202); a second active run is a Conflict (409)."""
    queue.require_broker()
    return _create_run(
        campaign=campaign,
        steps=plan_.FULL_PLAN,
        kind=RunKind.GENERATION,
        run_settings=settings or {},
        created_by=created_by,
    )


@transaction.atomic
def revision_start(
    *, campaign: Campaign, artifact_type: str, instructions: str, created_by: AbstractBaseUser | None
) -> OrchestrationRun:
    """A run that writes the next version of one artifact following instructions, then audits again."""
    queue.require_broker()
    if artifact_type not in plan_.GENERATION_STEPS:
        raise NotFound(f"Unknown artifact type; use one of {', '.join(plan_.GENERATION_STEPS)}.")
    instructions = instructions.strip()
    if not instructions:
        raise ServiceError("instructions must not be blank.")
    if not Artifact.objects.filter(campaign=campaign, type=artifact_type).exists():
        raise Conflict(f"There is no {artifact_type} to revise yet; run the campaign first.")
    return _create_run(
        campaign=campaign,
        steps=(artifact_type, plan_.AUDIT),
        kind=RunKind.REVISION,
        run_settings={},
        created_by=created_by,
        instructions=instructions,
    )


def _plan_thought(run: OrchestrationRun) -> str:
    done = list(run.steps.filter(status=StepStatus.COMPLETED).values_list("name", flat=True))
    if run.kind == RunKind.REVISION:
        return f"Revising {run.plan[0]} as instructed, then auditing the new set."
    if done:
        return f"Resuming after the last checkpoint ({', '.join(done)} done)."
    return "Plan: long copy first, then short copy and visual in parallel from it, then the compliance audit."


@transaction.atomic
def run_begin(*, run_pk: int) -> None:
    """pending → planning → generating (or auditing); a duplicate delivery finds it begun and stops."""
    run = locked_run(run_pk)
    if run.state != RunState.PENDING:
        return
    run.started_at = run.started_at or timezone.now()
    run.save(update_fields=["started_at"])
    set_state(run, RunState.PLANNING)
    events.campaign_started(run)
    thought(run, "orchestrator", _plan_thought(run))
    # Always through generating: dispatch moves on to approval or the audit when the artifacts exist.
    set_state(run, RunState.GENERATING)
    set_progress(run, computed_progress(run), "Started")
    dispatch(run)


@transaction.atomic
def run_cancel(*, run: OrchestrationRun, requested_by: AbstractBaseUser | None) -> OrchestrationRun:
    """Cancel now: the state changes at once and the workers stop at their next check (well within 1 s)."""
    queue.require_broker()
    run = locked_run(run.pk)
    if run.state in FINISHED_STATES:
        raise Conflict(f"This run has already {run.state}; there is nothing to cancel.")
    run.cancel_requested, run.cancel_requested_by = True, _username(requested_by)
    run.save(update_fields=["cancel_requested", "cancel_requested_by", "updated_at"])
    stop_active_steps(run, StepStatus.CANCELLED)
    run.approvals.filter(state=ApprovalState.PENDING).update(state=ApprovalState.CANCELLED, decided_at=timezone.now())
    set_state(run, RunState.CANCELLED)
    events.run_cancelled(run)
    return run


@transaction.atomic
def run_retry(*, run: OrchestrationRun, requested_by: AbstractBaseUser | None) -> OrchestrationRun:
    """Run a failed or cancelled run again from its last checkpoint: completed steps are kept."""
    queue.require_broker()
    run = locked_run(run.pk)
    if run.state not in (RunState.FAILED, RunState.CANCELLED):
        raise Conflict("Only a failed or cancelled run can be retried.")
    previous = run.state
    run.state, run.error, run.finished_at, run.cancel_requested, run.cancel_requested_by = (
        RunState.PENDING,
        "",
        None,
        False,
        "",
    )
    try:
        with transaction.atomic():
            run.save()
    except IntegrityError:
        raise Conflict(ACTIVE_RUN_CONFLICT) from None
    run.steps.exclude(status=StepStatus.COMPLETED).update(
        status=StepStatus.PENDING, attempt=0, error="", lease_expires_at=None, queued_at=None
    )
    events.state_changed(run, RunState.PENDING, previous)
    thought(run, "orchestrator", f"Retry requested by {_username(requested_by)}.")
    queue.begin_run(run.pk)
    return run


@transaction.atomic
def approval_decide(
    *,
    run: OrchestrationRun,
    approval_public_id: str,
    decision: str,
    comment: str = "",
    artifact_type: str | None = None,
    decided_by: AbstractBaseUser | None,
) -> Approval:
    """Approve (the audit follows) or reject with a comment (the artifact is written again with it)."""
    queue.require_broker()
    run = locked_run(run.pk)
    approval = None
    if is_public_id(approval_public_id):
        approval = run.approvals.select_for_update().filter(public_id=approval_public_id).first()
    if approval is None:
        raise NotFound("Approval not found.")
    if approval.state != ApprovalState.PENDING or run.state != RunState.AWAITING_APPROVAL:
        raise Conflict("This approval has already been decided.")
    if decision == "reject" and not comment.strip():
        raise ServiceError("A rejection needs a comment: it is the feedback the agent rewrites with.")
    rejected = _rejected_steps(artifact_type) if decision == "reject" else ()
    approval.state = ApprovalState.APPROVED if decision == "approve" else ApprovalState.REJECTED
    approval.comment, approval.decided_by, approval.decided_at = comment.strip(), decided_by, timezone.now()
    approval.save()
    events.approval_resolved(run, approval, decision, _username(decided_by))
    if decision == "approve":
        set_state(run, RunState.AUDITING)
    else:
        run.steps.filter(name__in=rejected).update(
            status=StepStatus.PENDING, attempt=0, instructions=approval.comment, error=""
        )
        thought(run, "orchestrator", f"Rewriting {', '.join(rejected)} with the reviewer's feedback.")
        set_state(run, RunState.GENERATING)
    dispatch(run)
    return approval


def _rejected_steps(artifact_type: str | None) -> tuple[str, ...]:
    """Rejecting the copy rewrites what is derived from it too; no type means everything."""
    if artifact_type in (None, "", plan_.COPY):
        return plan_.GENERATION_STEPS
    if artifact_type not in plan_.GENERATION_STEPS:
        raise ServiceError(f"artifact_type must be one of {', '.join(plan_.GENERATION_STEPS)}.")
    return (artifact_type,)


def runs_recover() -> int:
    """Requeue steps whose worker died (lease expired) or whose task message was lost; returns how many."""
    now = timezone.now()
    lost_before = now - timedelta(seconds=settings.RUN_REQUEUE_AFTER_SECONDS)
    stale = Q(status=StepStatus.RUNNING, lease_expires_at__lt=now) | Q(
        status=StepStatus.QUEUED, queued_at__lt=lost_before
    )
    requeued = 0
    for step_pk in RunStep.objects.filter(stale, run__state__in=WORKING_STATES).values_list("pk", flat=True):
        requeued += _requeue(step_pk, now=now, lost_before=lost_before)
    for run_pk in OrchestrationRun.objects.filter(state=RunState.PENDING, updated_at__lt=lost_before).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            if OrchestrationRun.objects.filter(pk=run_pk, state=RunState.PENDING).update(updated_at=now):
                queue.begin_run(run_pk)
                requeued += 1
    return requeued


@transaction.atomic
def _requeue(step_pk: int, *, now: datetime, lost_before: datetime) -> int:
    """Check again under the run's lock: the worker may have finished or renewed its lease meanwhile."""
    run = locked_run(RunStep.objects.values_list("run_id", flat=True).get(pk=step_pk))
    step = RunStep.objects.get(pk=step_pk)
    died = step.status == StepStatus.RUNNING and step.lease_expires_at is not None and step.lease_expires_at < now
    lost = step.status == StepStatus.QUEUED and step.queued_at is not None and step.queued_at < lost_before
    if run.state not in WORKING_STATES or not (died or lost):
        return 0
    why = "stopped responding; resuming it from the last checkpoint" if died else "was never picked up; queued again"
    logger.warning("run %s: the %s step %s", run.public_id, step.name, why)
    if died:
        thought(run, "orchestrator", f"The {step.agent} {why}.")
    queue_step(step)
    return 1


@transaction.atomic
def campaign_delete(*, campaign: Campaign) -> None:
    """Delete a campaign with everything it owns; refused while one of its runs is active."""
    # Lock the campaign so a run cannot start between the check and the delete.
    locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if locked.runs.exclude(state__in=FINISHED_STATES).exists():
        raise Conflict("This campaign has an active run; cancel it before deleting the campaign.")
    locked.delete()
