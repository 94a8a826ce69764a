"""Fair shares of the workers: each account has at most a limit of runs active at once.

A run of an account at its limit is stored ``queued`` (not refused) and starts, oldest first, when
one of the account's active runs finishes. Active means every state but ``queued`` and the finished
ones: a run waiting for a person's approval keeps its share (it resumes the moment it is approved).
The limit is ``RUNS_MAX_ACTIVE_PER_USER``, or the account's own ``RunLimit`` (set by an operator in
the admin); 0 is no limit. Whose share a run takes is its campaign owner's, whoever started it.

The decisions are serialized per account by a lock on the owner's user row (FOR NO KEY UPDATE, which
foreign-key checks do not wait for). Lock order, so that no two writers wait for each other: a new run
is inserted before the lock is taken (its insert may wait for a run of the same campaign finishing);
a finishing run (and its campaign) is locked before it, and so is the account stream it published
to; under it, a queued run is taken together with its campaign with SKIP LOCKED, never waited for
(a writer holding either may be waiting for this very transaction). A queued run passed over that
way (being cancelled, or its campaign busy with a refused request that instant) keeps its place;
the next one starts instead, and a share left free is given by the recovery task. Nothing publishes
to the account stream while holding the lock, so ``run.queued`` is a campaign event.

Queued runs start in the order they were queued (``queue_ticket``, handed out under the lock: a
retried run queues again at the end). ``run.queued`` gives a run's place when it is queued, and
again to the first ``POSITION_EVENTS`` runs each time the queue moves.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Max

from orchestration import events, lifecycle, queue
from orchestration.models import ACTIVE_STATES, ApprovalState, OrchestrationRun, RunKind, RunLimit, RunState
from orchestration.selectors import queue_position, runs_queued

# Position updates go to this many runs at the head of an account's queue (every run hears its
# position when it is queued; REST always has it).
POSITION_EVENTS = 10


def active_limit(owner_id: int) -> int:
    own = RunLimit.objects.filter(user_id=owner_id).values_list("max_active_runs", flat=True).first()
    return settings.RUNS_MAX_ACTIVE_PER_USER if own is None else own


def _lock_account(owner_id: int) -> None:
    get_user_model().objects.select_for_update(no_key=True).filter(pk=owner_id).exists()


def _active_count(owner_id: int, *, besides: int | None = None) -> int:
    return (
        OrchestrationRun.objects.filter(campaign__owner_id=owner_id, state__in=ACTIVE_STATES)
        .exclude(pk=besides)
        .count()
    )


def queue_if_full(run: OrchestrationRun) -> bool:
    """For a run just stored as pending (or started again): queue it if its account is at its limit,
    or has runs queued already (a new run does not jump the queue). True if queued; its events are
    the caller's to publish (``queued``), after its state change. Locks the account until the
    transaction ends, so the run's state is settled before anyone else decides."""
    owner_id = run.campaign.owner_id
    if not active_limit(owner_id):
        return False  # no limit: nothing to decide, no lock
    _lock_account(owner_id)
    limit = active_limit(owner_id)  # again, under the lock (an operator may have changed it)
    waiting = runs_queued(owner_id).exclude(pk=run.pk)
    if not limit or (_active_count(owner_id, besides=run.pk) < limit and not waiting.exists()):
        return False
    run.state = RunState.QUEUED
    run.queue_ticket = (waiting.aggregate(last=Max("queue_ticket"))["last"] or 0) + 1
    run.save(update_fields=["state", "queue_ticket", "updated_at"])
    return True


def queued(run: OrchestrationRun) -> None:
    """A run was stored queued: its events say where it stands."""
    events.run_queued(run, queue_position(run), active_limit(run.campaign.owner_id))


def _take_queued(pk: int) -> OrchestrationRun | None:
    """A queued run, locked with its campaign; None if it is not queued any more, or if another writer
    holds the run or its campaign right now (waiting could close a cycle: see the module's docstring)."""
    return (
        OrchestrationRun.objects.select_for_update(no_key=True, skip_locked=True, of=("self", "campaign"))
        .select_related("campaign")
        .filter(pk=pk, state=RunState.QUEUED)
        .first()
    )


def _activate(run: OrchestrationRun) -> None:
    """A queued run gets its share: it begins, or (a tool asked for with an approval) waits for it."""
    approval = None
    if run.kind == RunKind.TOOL:
        approval = run.approvals.filter(state=ApprovalState.PENDING).first()
    if approval is not None:
        lifecycle.set_state(run, RunState.AWAITING_APPROVAL)
        events.approval_required(run, approval)
        return
    lifecycle.set_state(run, RunState.PENDING)
    queue.begin_run(run.pk)


def runs_promote(*, owner_id: int) -> int:
    """Start the account's oldest queued runs while it has free shares; returns how many started.

    Called when one of its runs finishes (in that run's transaction), when an operator changes its
    limit, and by the recovery task (a share freed some other way: a run deleted in the admin)."""
    with transaction.atomic():
        _lock_account(owner_id)
        limit = active_limit(owner_id)
        free = limit - _active_count(owner_id) if limit else None
        started = 0
        for pk in runs_queued(owner_id).values_list("pk", flat=True):
            if free is not None and started >= free:
                break
            run = _take_queued(pk)
            if run is not None:
                _activate(run)
                started += 1
        if started:
            announce_positions(owner_id)
        return started


def announce_positions(owner_id: int, *, behind: int | None = None) -> None:
    """The queue moved (a run left it): the runs at its head hear their new places (only those
    behind ticket ``behind``, when the run that left was there)."""
    limit = active_limit(owner_id)
    head = list(runs_queued(owner_id).values_list("pk", "queue_ticket")[:POSITION_EVENTS])
    for position, (pk, ticket) in enumerate(head, start=1):
        if behind is not None and ticket is not None and ticket < behind:
            continue  # ahead of the run that left: its place did not change
        run = _take_queued(pk)
        if run is not None:  # one being cancelled right now says so itself
            events.run_queued(run, position, limit)


def share_freed(run: OrchestrationRun, previous: str | None) -> None:
    """lifecycle.set_state: a run finished. Leaving ``queued`` frees no share but moves the queue."""
    if previous == RunState.QUEUED:
        _lock_account(run.campaign.owner_id)  # or a promotion meanwhile would pass over the runs it holds
        announce_positions(run.campaign.owner_id, behind=run.queue_ticket)
    elif previous in ACTIVE_STATES:
        runs_promote(owner_id=run.campaign.owner_id)
