"""Executing one step: claim it by compare-and-set, stream the agent's work, record the outcome.

No transaction or row lock is held while a provider is working: the claim and the outcome are two
short transactions, and in between the step proves it still owns its claim by renewing its lease
(``Guard``). A cancelled run, a failed sibling or a recovery that requeued the step all take the
claim away, and the worker then stops at its next check without writing anything.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from accounts.selectors import budget_left
from accounts.services import spend_record
from campaigns import ids
from orchestration import events, health
from orchestration import plan as plan_
from orchestration.agents import WRITERS, AgentContext, Draft
from orchestration.agents.auditor import AuditResult, audit
from orchestration.lifecycle import (
    complete,
    computed_progress,
    dispatch,
    fail,
    locked_run,
    queue_step,
    set_progress,
    thought,
)
from orchestration.models import (
    WORKING_STATES,
    Artifact,
    ComplianceAudit,
    OrchestrationRun,
    RunKind,
    RunStep,
    StepStatus,
)
from orchestration.providers import get_provider
from orchestration.providers.base import (
    PermanentProviderError,
    Provider,
    ProviderTimeoutError,
    RateLimitedProviderError,
    TransientProviderError,
    Usage,
    estimate_tokens,
    tokens_for_chars,
)
from orchestration.selectors import campaign_artifacts

logger = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 0.25
HEARTBEAT_EVERY_SECONDS = 5.0
AUDIT_THOUGHT = "Checking every artifact for unsubstantiated claims, missing disclaimers, lengths and tone."


class StepAbandoned(Exception):
    """The step lost its claim: the run was cancelled or failed, or the step was handed to another worker."""


class BudgetExceeded(Exception):
    def __init__(self, message: str, usage: Usage) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass
class Claim:
    run: OrchestrationRun
    step: RunStep
    context: AgentContext
    simulation: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.step.name


def step_execute(*, run_pk: int, step_name: str, worker: str = "") -> None:
    claim = _claim(run_pk, step_name, worker)
    if claim is None:
        return  # a duplicate delivery, or the run moved on: nothing to do
    provider = settings.AGENT_PROVIDER
    try:
        outcome = _audit(claim) if claim.name == plan_.AUDIT else _write(claim)
    except StepAbandoned:
        logger.info("run %s: step %s stopped, its claim was taken away", claim.run.public_id, claim.name)
    except BudgetExceeded as exc:
        _finish_failed(claim, str(exc), retry=False, usage=exc.usage)
    except (TransientProviderError, SoftTimeLimitExceeded) as exc:
        health.record_outcome(provider, _outcome_kind(exc))
        _finish_failed(claim, str(exc) or "The step took too long.", retry=True)
    except PermanentProviderError as exc:
        health.record_outcome(provider, health.ERROR)
        _finish_failed(claim, str(exc), retry=False)
    except (OperationalError, InterfaceError) as exc:  # the database went away mid-step: retry, never fail
        logger.warning("run %s: step %s lost the database (%s)", claim.run.public_id, claim.name, type(exc).__name__)
        connection.close()
        try:
            _finish_failed(claim, "The database was briefly unavailable.", retry=True)
        except (OperationalError, InterfaceError):
            logger.warning("run %s: step %s is left to the recovery task (lease)", claim.run.public_id, claim.name)
    except Exception:
        logger.exception("run %s: step %s failed unexpectedly", claim.run.public_id, claim.name)
        _finish_failed(claim, f"The {claim.step.agent} failed unexpectedly.", retry=False)
    else:
        health.record_outcome(provider, health.OK)
        _finish_completed(claim, outcome)


def _outcome_kind(exc: Exception) -> str:
    if isinstance(exc, RateLimitedProviderError):
        return health.RATE_LIMITED
    if isinstance(exc, (ProviderTimeoutError, SoftTimeLimitExceeded)):
        return health.TIMEOUT
    return health.ERROR


# --- claim ----------------------------------------------------------------------------------------


def _latest_content(run: OrchestrationRun, artifact_type: str) -> str:
    latest = Artifact.objects.filter(campaign_id=run.campaign_id, type=artifact_type).order_by("-version").first()
    return latest.content if latest else ""


def _context(run: OrchestrationRun, step: RunStep) -> AgentContext:
    campaign = run.campaign
    revising = run.kind == RunKind.REVISION or bool(step.instructions)
    return AgentContext(
        name=campaign.name,
        brief=campaign.brief,
        audience=campaign.audience,
        tone=campaign.tone,
        copy=_latest_content(run, plan_.COPY) if step.name != plan_.COPY else "",
        instructions=step.instructions,
        previous=_latest_content(run, step.name) if revising and step.name != plan_.AUDIT else "",
    )


@transaction.atomic
def _claim(run_pk: int, step_name: str, worker: str) -> Claim | None:
    run = locked_run(run_pk)
    if run.state not in WORKING_STATES:
        return None
    now = timezone.now()
    claimed = RunStep.objects.filter(run=run, name=step_name, status=StepStatus.QUEUED).update(
        status=StepStatus.RUNNING,
        attempt=F("attempt") + 1,
        lease_owner=worker[:200],
        lease_expires_at=now + timedelta(seconds=settings.RUN_LEASE_SECONDS),
        started_at=now,
        error="",
    )
    if claimed != 1:
        return None
    step = RunStep.objects.get(run=run, name=step_name)
    OrchestrationRun.objects.filter(pk=run.pk).update(attempts=F("attempts") + 1, heartbeat_at=now)
    events.step_started(run, step)
    thought(run, step.agent, WRITERS[step.name].thought if step.name in WRITERS else AUDIT_THOUGHT)
    return Claim(run=run, step=step, context=_context(run, step), simulation=_simulation(run, step.name))


def _simulation(run: OrchestrationRun, step_name: str) -> dict[str, Any]:
    """The step's ``settings.simulate``, honoured only where ORCHESTRATION_SIMULATION is on (tests, demos).

    The API refuses simulate when it is off, but a run may still carry it: stored while it was on, or
    set in the admin. Such a run runs for real."""
    wanted = (run.settings.get("simulate") or {}).get(step_name, {})
    if wanted and not settings.ORCHESTRATION_SIMULATION:
        logger.warning(
            "run %s: step %s ignores settings.simulate (ORCHESTRATION_SIMULATION is off)", run.public_id, step_name
        )
        return {}
    return wanted


# --- work -----------------------------------------------------------------------------------------


class Guard:
    """Between chunks: enforce the budget, and renew the lease (which also notices a lost claim)."""

    def __init__(self, claim: Claim, provider: Provider, prompt_tokens: int) -> None:
        self.claim, self.provider, self.prompt_tokens = claim, provider, prompt_tokens
        self.completion_chars = 0
        self.checked_at = self.beat_at = time.monotonic()
        # What the campaign owner's monthly budget still allows (other runs spend it too: read again
        # with each lease renewal).
        self.account_left = budget_left(claim.run.campaign.owner_id)

    def usage(self) -> Usage:
        completion = tokens_for_chars(self.completion_chars)
        return Usage(self.prompt_tokens, completion, self.provider.price(self.prompt_tokens, completion))

    def check(self, piece: str = "", *, force: bool = False) -> None:
        """Count ``piece`` of the completion; stop if the budget is gone; renew the lease now and then."""
        self.completion_chars += len(piece)
        usage = self.usage()
        over = over_budget(self.claim.run, usage, account_left=self.account_left)
        if over:
            raise BudgetExceeded(over, usage)
        now = time.monotonic()
        if force or now - self.checked_at >= CHECK_EVERY_SECONDS:
            self.checked_at = now
            self.renew(now)

    def wait(self, seconds: float) -> None:
        """Pause ``seconds`` (a chunk delay, a simulated slow step) renewing the lease as while streaming,
        so a pause longer than the lease neither loses the step nor hides a cancellation."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, CHECK_EVERY_SECONDS))
            now = time.monotonic()
            if now - self.checked_at >= CHECK_EVERY_SECONDS:
                self.checked_at = now
                self.renew(now)

    def renew(self, now: float) -> None:
        step = self.claim.step
        expires = timezone.now() + timedelta(seconds=settings.RUN_LEASE_SECONDS)
        held = RunStep.objects.filter(pk=step.pk, status=StepStatus.RUNNING, attempt=step.attempt).update(
            lease_expires_at=expires
        )
        if not held:
            raise StepAbandoned
        self.account_left = budget_left(self.claim.run.campaign.owner_id)
        if now - self.beat_at >= HEARTBEAT_EVERY_SECONDS:
            self.beat_at = now
            OrchestrationRun.objects.filter(pk=self.claim.run.pk).update(heartbeat_at=timezone.now())


def over_budget(run: OrchestrationRun, extra: Usage, *, account_left: Decimal | None = None) -> str:
    """Why the run would go over its budget, or its owner's monthly budget (``account_left`` is what
    remains of it, None for no budget), with ``extra`` more usage; or ''."""
    max_tokens, max_cost = run.settings.get("max_tokens"), run.settings.get("max_cost")
    tokens = run.prompt_tokens + run.completion_tokens + extra.prompt_tokens + extra.completion_tokens
    if max_tokens is not None and tokens > max_tokens:
        return f"The run would exceed its token budget: {tokens} tokens needed, max_tokens is {max_tokens}."
    cost = Decimal(run.cost) + extra.cost
    if max_cost is not None and cost > Decimal(str(max_cost)):
        return f"The run would exceed its cost budget: ${cost} needed, max_cost is ${max_cost}."
    if account_left is not None and extra.cost > account_left:
        return (
            f"The account's monthly budget would be exceeded: ${extra.cost:.6f} more needed, "
            f"${account_left:.6f} left this month."
        )
    return ""


def _chunk(claim: Claim, text: str, index: int, *, complete: bool) -> None:
    events.artifact_chunk(claim.run, claim.name, text, index, complete=complete)


def _write(claim: Claim) -> tuple[Draft, Usage]:
    provider = get_provider()
    agent = WRITERS[claim.name]
    request = agent.request(claim.context, attempt=claim.step.attempt, simulation=claim.simulation)
    guard = Guard(claim, provider, sum(estimate_tokens(m["content"]) for m in request.messages))
    request.wait = guard.wait
    pieces: list[str] = []
    usage = None
    for item in provider.stream(request):
        if isinstance(item, Usage):
            usage = item
            continue
        pieces.append(item)
        guard.check(item)
        _chunk(claim, item, len(pieces) - 1, complete=False)
    text = "".join(pieces)
    guard.check(force=True)
    _chunk(claim, "", len(pieces), complete=True)
    return agent.finish(text, claim.context), usage or guard.usage()


def _audit(claim: Claim) -> AuditResult:
    simulation = claim.simulation
    if simulation.get("fail_permanently"):
        raise PermanentProviderError("The compliance check could not run (simulated permanent failure).")
    if claim.step.attempt <= simulation.get("fail_times", 0):
        raise TransientProviderError("The compliance check is temporarily unavailable (simulated transient failure).")
    guard = Guard(claim, get_provider(), 0)
    guard.wait(simulation.get("delay_ms", 0) / 1000)
    newest = {a.type: (a.content, a.metadata) for a in campaign_artifacts(claim.run.campaign).filter(is_newest=1)}
    result = audit(newest, brief=claim.context.brief, tone=claim.context.tone)
    guard.renew(time.monotonic())  # raises if the claim was lost meanwhile
    return result


# --- outcome --------------------------------------------------------------------------------------


def _still_claimed(run: OrchestrationRun, step: RunStep, claim: Claim) -> bool:
    return run.state in WORKING_STATES and step.status == StepStatus.RUNNING and step.attempt == claim.step.attempt


def _record_usage(run: OrchestrationRun, usage: Usage) -> None:
    run.prompt_tokens += usage.prompt_tokens
    run.completion_tokens += usage.completion_tokens
    run.cost = Decimal(run.cost) + usage.cost
    run.save(update_fields=["prompt_tokens", "completion_tokens", "cost", "updated_at"])
    events.usage_updated(run)
    spend_record(user_id=run.campaign.owner_id, cost=usage.cost)


def _complete_step(run: OrchestrationRun, step: RunStep) -> None:
    step.status, step.finished_at, step.lease_expires_at = StepStatus.COMPLETED, timezone.now(), None
    step.duration_ms = int((step.finished_at - step.started_at).total_seconds() * 1000)
    step.checkpoint_id = ids.new_id("chk")
    step.save()
    events.step_completed(run, step)


@transaction.atomic
def _finish_completed(claim: Claim, outcome: tuple[Draft, Usage] | AuditResult) -> None:
    run = locked_run(claim.run.pk)
    step = RunStep.objects.get(pk=claim.step.pk)
    if not _still_claimed(run, step, claim):
        return
    if isinstance(outcome, AuditResult):
        _store_audit(run, step, outcome)
        return
    draft, usage = outcome
    over = over_budget(run, usage, account_left=budget_left(run.campaign.owner_id))
    _record_usage(run, usage)
    if over:
        fail(run, step, over)
        return
    latest = Artifact.objects.filter(campaign=run.campaign, type=step.name).aggregate(v=Max("version"))["v"] or 0
    artifact = Artifact.objects.create(
        campaign=run.campaign,
        run=run,
        type=step.name,
        content=draft.content,
        metadata=draft.metadata,
        agent_name=step.agent,
        version=latest + 1,
    )
    events.artifact_generated(run, artifact)
    _complete_step(run, step)
    set_progress(run, computed_progress(run), f"{step.name} ready", step.name)
    dispatch(run)


def _store_audit(run: OrchestrationRun, step: RunStep, result: AuditResult) -> None:
    audit_row, _ = ComplianceAudit.objects.update_or_create(
        run=run,
        defaults={
            "campaign": run.campaign,
            "score": result.score,
            "is_compliant": result.is_compliant,
            "issues": result.issues,
            "feedback": result.feedback,
            "audited_at": timezone.now(),
        },
    )
    events.compliance_completed(run, audit_row)
    _complete_step(run, step)
    complete(run)


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter: base * 2^(attempt-1), capped, times a random 0.5-1.0."""
    ceiling = min(settings.AGENT_RETRY_MAX_MS, settings.AGENT_RETRY_BASE_MS * 2 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0) / 1000


@transaction.atomic
def _finish_failed(claim: Claim, message: str, *, retry: bool, usage: Usage | None = None) -> None:
    run = locked_run(claim.run.pk)
    step = RunStep.objects.get(pk=claim.step.pk)
    if not _still_claimed(run, step, claim):
        return
    if usage is not None:
        _record_usage(run, usage)
    limit = settings.AGENT_MAX_ATTEMPTS
    if retry and step.attempt < limit:
        delay = backoff_seconds(step.attempt)
        step.error = message
        step.save(update_fields=["error"])
        thought(run, step.agent, f"{message} Retrying in {delay:.1f} s (attempt {step.attempt + 1} of {limit}).")
        queue_step(step, delay=delay)
        return
    if retry:
        message = f"{message} Gave up after {step.attempt} attempts."
    fail(run, step, message)
