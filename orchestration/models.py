"""Runs of a campaign's plan, their steps, the artifacts and audits they produce, and approvals.

The tables keep the names they had when these models lived in ``campaigns`` (a state-only
migration moved them: orchestration/migrations/0001_initial.py)."""

from __future__ import annotations

from django.conf import settings as django_settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from campaigns import ids, steps
from campaigns.models import Campaign
from campaigns.validation import validate_settings


class ArtifactType(models.TextChoices):
    COPY = steps.COPY, "Copy"
    SHORT_COPY = steps.SHORT_COPY, "Short copy"
    VISUAL = steps.VISUAL, "Visual"


ARTIFACT_ORDER = [ArtifactType.COPY, ArtifactType.SHORT_COPY, ArtifactType.VISUAL]


class RunState(models.TextChoices):
    QUEUED = "queued"  # waiting for a free share of the workers (orchestration/fairshare.py)
    PENDING = "pending"
    PLANNING = "planning"
    GENERATING = "generating"
    AWAITING_APPROVAL = "awaiting_approval"
    AUDITING = "auditing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES = (RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED)
WORKING_STATES = (RunState.GENERATING, RunState.AUDITING)  # a worker may be executing one of its steps
# Holding one of its account's shares of the workers: begun or about to be, or waiting for a person.
ACTIVE_STATES = tuple(state for state in RunState if state not in FINISHED_STATES and state != RunState.QUEUED)


class RunKind(models.TextChoices):
    GENERATION = "generation"
    REVISION = "revision"  # an agent's next version, as a person asked (a message or a revision), re-audited
    TOOL = "tool"  # one agent's tool, run on its own (ExecuteTool), perhaps behind an approval


class OrchestrationRun(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=ids.run_id, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs")
    kind = models.CharField(max_length=16, choices=RunKind.choices, default=RunKind.GENERATION)
    state = models.CharField(max_length=32, choices=RunState.choices, default=RunState.PENDING, db_index=True)
    # The plan as step names in order, e.g. ["Copy", "ShortCopy", "Visual", "audit"]; each step's
    # progress lives in its RunStep row.
    plan = models.JSONField(default=list, blank=True)
    settings = models.JSONField(default=dict, blank=True, validators=[validate_settings])
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    progress = models.PositiveSmallIntegerField(default=0)
    # Last heartbeat of any of the run's steps (each step holds its own lease, see RunStep).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Its place in its account's queue while ``queued``: queued runs start in this order (a retried
    # run queues again at the end, whatever its age). Handed out under the account's lock.
    queue_ticket = models.PositiveBigIntegerField(null=True, blank=True, editable=False)
    cancel_requested_by = models.CharField(max_length=150, blank=True)
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "campaigns_orchestrationrun"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign"],
                condition=~Q(state__in=FINISHED_STATES),
                name="one_active_run_per_campaign",
                violation_error_message="This campaign already has an active run.",
            ),
        ]
        indexes = [models.Index(fields=["campaign", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.state})"


class StepStatus(models.TextChoices):
    PENDING = "pending"  # waiting for the steps it depends on
    QUEUED = "queued"  # handed to the broker, not claimed yet (or waiting out a retry backoff)
    RUNNING = "running"  # claimed by a worker that holds the lease
    COMPLETED = "completed"  # done: a checkpoint a retried run resumes after
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunStep(models.Model):
    """One step of a run's plan, claimed by compare-and-set and kept alive by a lease."""

    run = models.ForeignKey(OrchestrationRun, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=32)  # Copy, ShortCopy, Visual or audit
    agent = models.CharField(max_length=64)
    position = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempt = models.PositiveIntegerField(default=0)
    # Extra guidance for the agent: a revision's instructions or a rejection's comment.
    instructions = models.TextField(blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    checkpoint_id = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        db_table = "campaigns_runstep"
        ordering = ["run_id", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="one_step_per_name")]
        indexes = [models.Index(fields=["status", "lease_expires_at"]), models.Index(fields=["status", "queued_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.status}, attempt {self.attempt})"


class Artifact(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=ids.artifact_id, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="artifacts")
    run = models.ForeignKey(OrchestrationRun, on_delete=models.CASCADE, related_name="artifacts")
    type = models.CharField(max_length=16, choices=ArtifactType.choices)
    content = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    agent_name = models.CharField(max_length=64)
    # Versions count per campaign and type: 1 for the first, n+1 for each regeneration or revision.
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "campaigns_artifact"
        ordering = ["campaign", "type", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "type", "version"], name="one_artifact_per_version"),
            models.UniqueConstraint(fields=["run", "type", "version"], name="one_artifact_per_run_step"),
        ]

    def __str__(self) -> str:
        return f"{self.type} v{self.version} ({self.public_id})"


class Severity(models.TextChoices):
    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"


class ComplianceAudit(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="audits")
    run = models.OneToOneField(OrchestrationRun, on_delete=models.CASCADE, related_name="audit")
    score = models.PositiveSmallIntegerField(validators=[MinValueValidator(0), MaxValueValidator(100)])
    is_compliant = models.BooleanField()
    # [{"artifact_type": "Copy", "issue_description": "...", "severity": "High"}, ...]
    issues = models.JSONField(default=list, blank=True)
    feedback = models.TextField(blank=True)
    audited_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "campaigns_complianceaudit"
        ordering = ["-audited_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(score__gte=0) & Q(score__lte=100), name="audit_score_0_100"),
        ]

    def __str__(self) -> str:
        return f"audit of {self.run.public_id}: {self.score}"


class ApprovalState(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # the run was cancelled while it waited


class Approval(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=ids.approval_id, editable=False)
    run = models.ForeignKey(OrchestrationRun, on_delete=models.CASCADE, related_name="approvals")
    step = models.CharField(max_length=32)
    reason = models.CharField(max_length=500, blank=True)
    state = models.CharField(max_length=16, choices=ApprovalState.choices, default=ApprovalState.PENDING)
    decided_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    comment = models.TextField(blank=True)
    # A tool run's approval: {"tool_name", "agent", "parameters"} (what the approver is asked to allow).
    tool = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "campaigns_approval"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["run"], condition=Q(state="pending"), name="one_pending_approval_per_run"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.state})"


class Strategy(models.TextChoices):
    SEQUENTIAL = "sequential", "Sequential: one step at a time"
    PARALLEL = "parallel", "Parallel where the steps allow"


GOAL_MAX_LENGTH = 5_000


class OrchestrationPlan(models.Model):
    """A plan made from a goal and a strategy (the track-4 hubs' CreateOrchestrationPlan), kept with
    the run it became when it was executed (once)."""

    public_id = models.CharField(max_length=32, unique=True, default=ids.plan_id, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="plans")
    goal = models.TextField(max_length=GOAL_MAX_LENGTH)
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.PARALLEL)
    # [{"id": "Copy", "agent_id": "copywriter", "task": "...", "depends_on": []}, ...] in plan order
    steps = models.JSONField(default=list)
    run = models.OneToOneField(
        OrchestrationRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="orchestration_plan"
    )
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.strategy})"


class ProviderStatus(models.TextChoices):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"


class ProviderHealth(models.Model):
    """Each model provider's recent outcomes, as every worker saw them, and the status they add up
    to (orchestration/health.py); a change of status is published on the operations stream."""

    provider = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=ProviderStatus.choices, default=ProviderStatus.HEALTHY)
    # The last outcomes, oldest first: [[POSIX time, "ok" | "error" | "timeout" | "rate_limited"], ...]
    outcomes = models.JSONField(default=list, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)
    rate_limited_alert_at = models.DateTimeField(null=True, blank=True)
    message = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["provider"]
        verbose_name_plural = "provider health"

    def __str__(self) -> str:
        return f"{self.provider}: {self.status}"


class RunLimit(models.Model):
    """An account's own limit on its active runs, set by an operator; without one, the setting
    RUNS_MAX_ACTIVE_PER_USER holds (orchestration/fairshare.py)."""

    user = models.OneToOneField(django_settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="run_limit")
    max_active_runs = models.PositiveIntegerField(
        help_text="Runs of this account's campaigns active at once (more wait, queued); 0: no limit."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["user"]

    def __str__(self) -> str:
        return f"run limit of {self.user}"
