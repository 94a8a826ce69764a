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
from campaigns import services as campaign_services
from campaigns.errors import Conflict, NotFound, ServiceError
from campaigns.models import Campaign
from campaigns.selectors import campaigns_visible_to, is_public_id
from campaigns.validation import validate_settings
from orchestration import events, fairshare, queue
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
    GOAL_MAX_LENGTH,
    WORKING_STATES,
    Approval,
    ApprovalState,
    Artifact,
    OrchestrationPlan,
    OrchestrationRun,
    RunKind,
    RunState,
    RunStep,
    StepStatus,
    Strategy,
)

logger = logging.getLogger(__name__)

TOOL_INSTRUCTIONS_MAX_LENGTH = 5_000

ACTIVE_RUN_CONFLICT = "This campaign already has an active run; wait for it to finish or cancel it."


class Busy(Conflict):
    """The campaign's agents are at work on another run (one active run per campaign)."""


class UnknownAgent(NotFound):
    def __init__(self, agent: object) -> None:
        agents = ", ".join(plan_.AGENTS)
        if isinstance(agent, str):
            super().__init__(f"Agent {agent[:40]!r} not found; the agents are {agents}.")
        else:
            super().__init__(f"Agent not found: an agent's id is a string, one of {agents}.")


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
    begin: bool = True,
    plan: OrchestrationPlan | None = None,
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
        raise Busy(ACTIVE_RUN_CONFLICT) from None
    fairshare.queue_if_full(run)  # decided after the insert (orchestration/fairshare.py: lock order)
    if plan is not None:  # before its events, which name the plan
        plan.run = run
        plan.save(update_fields=["run"])
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
    events.state_changed(run, run.state, None)
    if run.state == RunState.QUEUED:
        fairshare.queued(run)  # it begins (or asks for its approval) when its account has a free share
    elif begin:
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
    if not instructions.strip():
        raise ServiceError("instructions must not be blank.")
    if not Artifact.objects.filter(campaign=campaign, type=artifact_type).exists():
        raise Conflict(f"There is no {artifact_type} to revise yet; run the campaign first.")
    return agent_message(
        campaign=campaign, agent=plan_.STEP_AGENTS[artifact_type], content=instructions, sent_by=created_by
    )


@transaction.atomic
def agent_message(
    *, campaign: Campaign, agent: str, content: str, sent_by: AbstractBaseUser | None
) -> OrchestrationRun:
    """A person's message to an agent: instructions for its next version (the auditor: a new audit),
    written in a run of that step and the audit (the copy changed, so it is audited again). The
    message is the ``agent.message`` event; the answer streams as the artifact's chunks."""
    queue.require_broker()
    step = plan_.AGENT_STEPS.get(agent) if isinstance(agent, str) else None
    if step is None:
        raise UnknownAgent(agent)
    content = content.strip()
    if not content:
        raise ServiceError("The message must not be blank.")
    run = _create_run(
        campaign=campaign,
        steps=(step,) if step == plan_.AUDIT else (step, plan_.AUDIT),
        kind=RunKind.REVISION,
        run_settings={},
        created_by=sent_by,
        instructions=content,
    )
    events.agent_message(run, agent, content, _username(sent_by))
    return run


@transaction.atomic
def session_create(
    *, owner: AbstractBaseUser, name: str, agents: list[str], brief: str = "", audience: str = "", tone: str = ""
) -> Campaign:
    """A track-4 session: a campaign (its brief defaults to its name) with the agents named, which
    must be known ones (an empty list means all four: a session always has every agent at hand)."""
    for agent in agents:
        if agent not in plan_.AGENT_STEPS:
            raise UnknownAgent(agent)
    return campaign_services.campaign_create(owner=owner, name=name, brief=brief or name, audience=audience, tone=tone)


@transaction.atomic
def plan_create(
    *,
    campaign: Campaign,
    goal: str,
    strategy: str,
    agents: list[str] | None,
    created_by: AbstractBaseUser | None,
) -> OrchestrationPlan:
    """A plan for ``goal`` with the given agents (all of them when None), stored and announced
    (``plan.created``); ``plan_execute`` makes it a run."""
    goal = goal.strip()
    if not goal:
        raise ServiceError("The goal must not be blank.")
    if len(goal) > GOAL_MAX_LENGTH:
        raise ServiceError(f"The goal must be at most {GOAL_MAX_LENGTH} characters.")
    if strategy not in Strategy.values:
        raise ServiceError(f"strategy must be one of {', '.join(Strategy.values)}.")
    if agents is None:
        agents = list(plan_.AGENTS)
    for agent in agents:
        if agent not in plan_.AGENT_STEPS:
            raise UnknownAgent(agent)
    plan = OrchestrationPlan.objects.create(
        campaign=campaign,
        goal=goal,
        strategy=strategy,
        steps=plan_.plan_steps(goal, strategy, agents),
        created_by=created_by,
    )
    events.plan_created(plan)
    return plan


@transaction.atomic
def plan_execute(*, plan: OrchestrationPlan, created_by: AbstractBaseUser | None) -> OrchestrationRun:
    """The plan's run: its steps, its strategy, the goal as every writer's instructions. Once."""
    queue.require_broker()
    plan = OrchestrationPlan.objects.select_for_update(of=("self",)).select_related("campaign", "run").get(pk=plan.pk)
    if plan.run is not None:
        raise Conflict(f"This plan was executed already (run {plan.run.public_id}); create another plan.")
    run = _create_run(
        campaign=plan.campaign,
        steps=tuple(step["id"] for step in plan.steps),
        kind=RunKind.GENERATION,
        # What a person asked for, step by step: no review stop (tools have their own approvals).
        run_settings={"strategy": plan.strategy, "require_approval": False},
        created_by=created_by,
        instructions=plan.goal,
        plan=plan,
    )
    return run


def _tool_parameters(parameters: Any) -> dict[str, Any]:
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ServiceError("parameters must be an object (or null).")
    unknown = sorted(str(key)[:40] for key in parameters if key != "instructions")
    if unknown:
        raise ServiceError(f"Unknown parameter {unknown[0]!r}; the tools take 'instructions' only.")
    instructions = parameters.get("instructions", "")
    if instructions is None:
        return {}
    if not isinstance(instructions, str) or len(instructions) > TOOL_INSTRUCTIONS_MAX_LENGTH:
        raise ServiceError(f"instructions must be a string of at most {TOOL_INSTRUCTIONS_MAX_LENGTH} characters.")
    return {"instructions": instructions} if instructions.strip() else {}


@transaction.atomic
def tool_execute(
    *,
    campaign: Campaign,
    agent: str,
    tool_name: str,
    parameters: Any,
    require_approval: bool,
    requested_by: AbstractBaseUser | None,
) -> OrchestrationRun:
    """Run one agent's tool on its own: a run of that step alone. With ``require_approval`` nothing
    runs until the approval (kept in the database) is decided; a rejection cancels the run."""
    queue.require_broker()
    step = plan_.AGENT_STEPS.get(agent) if isinstance(agent, str) else None
    if step is None:
        raise UnknownAgent(agent)
    if not isinstance(tool_name, str) or plan_.TOOLS.get(tool_name) != step:
        shown = repr(tool_name[:40]) if isinstance(tool_name, str) else "of that name (toolName must be a string)"
        raise ServiceError(f"The {agent} has no tool {shown}; its tool is {plan_.STEP_TOOLS[step]}.")
    parameters = _tool_parameters(parameters)
    run = _create_run(
        campaign=campaign,
        steps=(step,),
        kind=RunKind.TOOL,
        run_settings={},
        created_by=requested_by,
        instructions=parameters.get("instructions", ""),
        begin=not require_approval,
    )
    if require_approval:
        tool = {"tool_name": tool_name, "agent": agent, "parameters": parameters}
        approval = run.approvals.create(step=step, reason=f"The {agent} asks to run {tool_name}.", tool=tool)
        if run.state != RunState.QUEUED:  # a queued one asks when it gets its share
            set_state(run, RunState.AWAITING_APPROVAL)
            events.approval_required(run, approval)
    return run


def _plan_thought(run: OrchestrationRun) -> str:
    done = list(run.steps.filter(status=StepStatus.COMPLETED).values_list("name", flat=True))
    if run.kind == RunKind.REVISION:
        if run.plan == [plan_.AUDIT]:
            return "Auditing the current set again, as asked."
        return f"Revising {run.plan[0]} as instructed, then auditing the new set."
    if run.kind == RunKind.TOOL:
        return f"Running {plan_.STEP_TOOLS[run.plan[0]]} on its own, as asked."
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
    events.run_outcome(run)
    return run


@transaction.atomic
def run_retry(*, run: OrchestrationRun, requested_by: AbstractBaseUser | None) -> OrchestrationRun:
    """Run a failed or cancelled run again from its last checkpoint: completed steps are kept."""
    queue.require_broker()
    run = locked_run(run.pk)
    if run.state not in (RunState.FAILED, RunState.CANCELLED):
        raise Conflict("Only a failed or cancelled run can be retried.")
    if run.kind == RunKind.TOOL and run.approvals.exclude(state=ApprovalState.APPROVED).exists():
        raise Conflict("This tool was never approved; ask for it again (ExecuteTool, or POST …/tools/).")
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
    fairshare.queue_if_full(run)
    run.steps.exclude(status=StepStatus.COMPLETED).update(
        status=StepStatus.PENDING, attempt=0, error="", lease_expires_at=None, queued_at=None
    )
    events.state_changed(run, run.state, previous)
    if run.state == RunState.QUEUED:
        fairshare.queued(run)
    else:
        queue.begin_run(run.pk)
    thought(run, "orchestrator", f"Retry requested by {_username(requested_by)}.")
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
    if approval.state == ApprovalState.PENDING and run.state == RunState.QUEUED:
        raise Conflict("This run is queued behind its account's other runs; decide its approval once it starts.")
    if approval.state != ApprovalState.PENDING or run.state != RunState.AWAITING_APPROVAL:
        raise Conflict("This approval has already been decided.")
    if run.kind == RunKind.TOOL:
        return _tool_decide(run, approval, decision, comment, decided_by)
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


def _tool_decide(
    run: OrchestrationRun, approval: Approval, decision: str, comment: str, decided_by: AbstractBaseUser | None
) -> Approval:
    """A tool's approval: approved, the run begins; rejected (a reason optional), it is cancelled."""
    approval.state = ApprovalState.APPROVED if decision == "approve" else ApprovalState.REJECTED
    approval.comment, approval.decided_by, approval.decided_at = comment.strip(), decided_by, timezone.now()
    approval.save()
    by = _username(decided_by)
    events.approval_resolved(run, approval, decision, by)
    if decision == "approve":
        set_state(run, RunState.PENDING)
        queue.begin_run(run.pk)
        return approval
    run.error = f"Rejected by {by}" + (f": {approval.comment}" if approval.comment else ".")
    run.cancel_requested_by = by
    run.save(update_fields=["error", "cancel_requested_by", "updated_at"])
    set_state(run, RunState.CANCELLED)
    events.run_cancelled(run)
    events.run_outcome(run)
    return approval


def approval_get_visible(user: AbstractBaseUser, approval_public_id: Any) -> Approval:
    """An approval by its id alone (the hubs' ApproveTool), if the user may see its campaign."""
    visible = campaigns_visible_to(user)
    approval = None
    if is_public_id(approval_public_id):
        approval = (
            Approval.objects.select_related("run__campaign")
            .filter(public_id=approval_public_id, run__campaign__in=visible)
            .first()
        )
    if approval is None:
        raise NotFound("Approval not found.")
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
    # Shares freed without a run finishing (a run deleted, a limit raised by hand in the database).
    owners = OrchestrationRun.objects.filter(state=RunState.QUEUED).values_list("campaign__owner_id", flat=True)
    for owner_id in sorted(set(owners)):
        requeued += fairshare.runs_promote(owner_id=owner_id)
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
