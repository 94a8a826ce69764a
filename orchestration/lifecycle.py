"""State changes of a run that every service shares: transitions, progress, dispatch, failure.

Each function here runs inside the caller's transaction, with the run's row locked (``locked_run``),
and publishes the events that describe what it changed, so the log and the state never disagree.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from orchestration import events, fairshare, queue
from orchestration import plan as plan_
from orchestration.models import (
    FINISHED_STATES,
    ApprovalState,
    OrchestrationRun,
    RunKind,
    RunState,
    RunStep,
    StepStatus,
)

ACTIVE_STEP_STATES = (StepStatus.QUEUED, StepStatus.RUNNING)


def locked_run(run_pk: int) -> OrchestrationRun:
    """The run, with its row locked until the transaction ends: every writer of a run takes this first."""
    return OrchestrationRun.objects.select_for_update().select_related("campaign").get(pk=run_pk)


def set_state(run: OrchestrationRun, state: str) -> None:
    previous = run.state
    run.state = state
    fields = ["state", "updated_at"]
    if state in FINISHED_STATES:
        run.finished_at = timezone.now()
        fields.append("finished_at")
    run.save(update_fields=fields)
    events.state_changed(run, state, previous)
    if state in FINISHED_STATES and previous not in FINISHED_STATES:
        fairshare.share_freed(run, previous)  # the account's next queued run may start


def set_progress(run: OrchestrationRun, percentage: int, message: str, step: str | None = None) -> None:
    """Progress only moves forward, whatever order parallel steps finish in."""
    if percentage <= run.progress:
        return
    run.progress = percentage
    run.save(update_fields=["progress", "updated_at"])
    events.progress(run, percentage, message, step)


def complete(run: OrchestrationRun) -> None:
    """Every step is done: the run is completed."""
    set_state(run, RunState.COMPLETED)
    set_progress(run, 100, "Campaign ready")
    events.campaign_completed(run)
    events.run_outcome(run)


def computed_progress(run: OrchestrationRun) -> int:
    done = run.steps.filter(status=StepStatus.COMPLETED).values_list("name", flat=True)
    planned = sum(plan_.PROGRESS_WHEN_DONE[name] for name in run.plan)
    earned = sum(plan_.PROGRESS_WHEN_DONE[name] for name in done)
    return min(99, plan_.PROGRESS_AT_START + round((100 - plan_.PROGRESS_AT_START) * earned / max(planned, 1)))


def thought(run: OrchestrationRun, agent: str, text: str) -> None:
    events.agent_thought(run, agent, text)


def _needs_approval(run: OrchestrationRun, generation: list[RunStep]) -> bool:
    """Approval is asked for once per generated set: a regeneration after a rejection asks again."""
    if run.kind != RunKind.GENERATION or not run.settings.get("require_approval"):
        return False
    if not generation or plan_.AUDIT not in run.plan:  # the review comes before an audit
        return False
    last_generated = max(step.finished_at for step in generation)
    return not run.approvals.filter(state=ApprovalState.APPROVED, decided_at__gte=last_generated).exists()


def _ready_generation_steps(run: OrchestrationRun, steps: list[RunStep]) -> list[RunStep]:
    """The generation steps that may start now: each whose steps it needs are done (the "parallel"
    strategy, the default), or with the "sequential" one, the next in the plan once none is active."""
    if run.settings.get("strategy") == "sequential":
        generation = [step for step in steps if step.name != plan_.AUDIT]
        if any(step.status in ACTIVE_STEP_STATES for step in generation):
            return []
        return [step for step in generation if step.status == StepStatus.PENDING][:1]
    done = {step.name for step in steps if step.status == StepStatus.COMPLETED}
    return [
        step
        for step in steps
        if step.name != plan_.AUDIT
        and step.status == StepStatus.PENDING
        and all(dep in done or dep not in run.plan for dep in plan_.DEPENDS_ON[step.name])
    ]


def request_approval(run: OrchestrationRun) -> None:
    approval = run.approvals.create(step="generation", reason="Review the generated artifacts before the audit.")
    set_state(run, RunState.AWAITING_APPROVAL)
    events.approval_required(run, approval)


def dispatch(run: OrchestrationRun) -> None:
    """Queue every step that may start now, or move the run on when the generation steps are done."""
    steps = list(run.steps.order_by("position"))
    if run.state == RunState.GENERATING:
        generation = [step for step in steps if step.name != plan_.AUDIT]
        if any(step.status != StepStatus.COMPLETED for step in generation):
            for step in _ready_generation_steps(run, steps):
                queue_step(step)
            return
        if _needs_approval(run, generation):
            request_approval(run)
            return
        if plan_.AUDIT not in run.plan:  # a plan or a tool without the auditor
            complete(run)
            return
        set_state(run, RunState.AUDITING)
    if run.state == RunState.AUDITING:
        for step in steps:
            if step.name == plan_.AUDIT and step.status == StepStatus.PENDING:
                queue_step(step)


def queue_step(step: RunStep, *, delay: float = 0) -> None:
    step.status = StepStatus.QUEUED
    step.queued_at = timezone.now() + timedelta(seconds=delay)
    step.save(update_fields=["status", "queued_at"])
    queue.execute_step(step.run_id, step.name, countdown=delay)


def stop_active_steps(run: OrchestrationRun, status: str) -> None:
    """Steps still queued or running lose their claim, so their workers stop at the next check."""
    run.steps.filter(status__in=ACTIVE_STEP_STATES).update(status=status, lease_expires_at=None)


def fail(run: OrchestrationRun, step: RunStep | None, message: str) -> None:
    if step is not None:
        step.status, step.error, step.finished_at = StepStatus.FAILED, message, timezone.now()
        step.save(update_fields=["status", "error", "finished_at"])
    stop_active_steps(run, StepStatus.CANCELLED)
    run.error = message
    run.save(update_fields=["error", "updated_at"])
    set_state(run, RunState.FAILED)
    events.generation_failed(run, step, message)
    events.run_outcome(run)
