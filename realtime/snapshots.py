"""Snapshots: authoritative state, read in one consistent view, with the last event whose effects
it includes. The campaign's (PROTOCOL.md §6), and the account's and operations' (§11)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from accounts.selectors import current_period, money, monthly_budget, period_label, spend_this_month
from campaigns.models import Campaign
from campaigns.payloads import isoformat
from eventlog.models import Stream, StreamKind
from orchestration.models import (
    ARTIFACT_ORDER,
    FINISHED_STATES,
    ComplianceAudit,
    OrchestrationRun,
    RunState,
    StepStatus,
)
from orchestration.payloads import artifact_payload, audit_payload
from orchestration.plan import AUDIT
from orchestration.selectors import campaign_artifacts

ARTIFACT_TYPES = [str(kind) for kind in ARTIFACT_ORDER]


@contextmanager
def consistent_read() -> Iterator[None]:
    """A transaction in which every query sees the same committed state.

    PostgreSQL's default READ COMMITTED gives each statement a new view, so the snapshot asks for
    REPEATABLE READ; on SQLite a transaction already reads one view. Inside an outer transaction
    the caller's view is used as it is (the isolation level can no longer be set there).
    """
    outer = connection.in_atomic_block
    with transaction.atomic():
        if not outer and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _pending_types(run: OrchestrationRun | None) -> list[str]:
    if run is None or run.state in (RunState.COMPLETED, RunState.QUEUED):  # a queued run writes nothing yet
        return []
    steps = run.steps.filter(name__in=ARTIFACT_TYPES).exclude(status=StepStatus.COMPLETED).order_by("position")
    return list(steps.values_list("name", flat=True))


def _audit_status(run: OrchestrationRun | None, audit: ComplianceAudit | None) -> str:
    if audit is not None:
        return "completed"
    if run is not None and run.state == RunState.AUDITING:
        return "in_progress"
    return "not_started"


def campaign_snapshot(campaign_pk: int) -> dict[str, Any]:
    with consistent_read():
        campaign = Campaign.objects.get(pk=campaign_pk)
        run = OrchestrationRun.objects.filter(campaign=campaign).order_by("-created_at", "-id").first()
        audit = ComplianceAudit.objects.filter(run=run).first() if run else None
        if run is not None and AUDIT not in run.plan:  # a plan or a tool without the auditor: the last audit stands
            audit = ComplianceAudit.objects.filter(campaign=campaign).order_by("-audited_at", "-id").first()
        pending = _pending_types(run)
        newest = [a for a in campaign_artifacts(campaign).filter(is_newest=1) if a.type not in pending]
    return {
        "campaign_id": campaign.public_id,
        "run_id": run.public_id if run else None,
        "current_state": run.state if run else "idle",
        "completed_artifacts": [a.type for a in newest],
        "pending_artifacts": pending,
        "audit_status": _audit_status(run, audit),
        "last_event_sequence": campaign.last_sequence,
        "timestamp": isoformat(timezone.now()),
        "artifacts": [artifact_payload(a) for a in newest],
        "compliance": audit_payload(audit) if audit else None,
    }


def stream_snapshot(stream_pk: int) -> dict[str, Any]:
    """An account's state (the month's spend, the budget, the runs still active) or, for the operations
    stream, the sequence alone; ``last_event_sequence`` as for a campaign."""
    with consistent_read():
        stream = Stream.objects.get(pk=stream_pk)
        snapshot: dict[str, Any] = {"stream": stream.kind}
        if stream.kind == StreamKind.ACCOUNT:
            runs = (
                OrchestrationRun.objects.filter(campaign__owner_id=stream.user_id)
                .exclude(state__in=FINISHED_STATES)
                .select_related("campaign")
                .order_by("created_at", "id")
            )
            snapshot.update(
                period=period_label(current_period()),
                spend=money(spend_this_month(stream.user_id)),
                budget=money(monthly_budget(stream.user_id)),
                active_runs=[
                    {"campaign_id": run.campaign.public_id, "run_id": run.public_id, "state": run.state} for run in runs
                ],
            )
    snapshot.update(last_event_sequence=stream.last_sequence, timestamp=isoformat(timezone.now()))
    return snapshot
