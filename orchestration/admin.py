"""Operators' admin for campaigns and their work: each campaign with its runs, each run with its
steps, artifacts, approvals and events, and the actions that drive runs (start, cancel, retry,
revise). The actions call the same services as the REST API, so the same rules hold."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html

from accounts.admin import ConfigChangesAdmin
from campaigns.admin import CampaignAdmin, ReadOnlyInline
from campaigns.errors import Conflict, ServiceError
from campaigns.models import Campaign
from eventlog.admin import CampaignEventAdmin
from eventlog.models import CampaignEvent
from orchestration import fairshare, services
from orchestration import plan as plan_
from orchestration.models import (
    FINISHED_STATES,
    Approval,
    Artifact,
    ComplianceAudit,
    OrchestrationPlan,
    OrchestrationRun,
    RunLimit,
    RunStep,
)
from orchestration.selectors import runs_queued


def _each(modeladmin: admin.ModelAdmin, request: HttpRequest, objects: QuerySet, verb: str, call) -> None:
    done = 0
    for obj in objects:
        try:
            call(obj)
            done += 1
        except ServiceError as exc:
            modeladmin.message_user(request, f"{obj}: {exc}", messages.WARNING)
    if done:
        modeladmin.message_user(request, f"{verb} {done} of {len(objects)}.", messages.SUCCESS)


class RunInline(ReadOnlyInline):
    model = OrchestrationRun
    fields = ["public_id", "kind", "state", "attempts", "prompt_tokens", "completion_tokens", "cost", "created_at"]
    readonly_fields = fields
    ordering = ["-created_at"]


class StepInline(ReadOnlyInline):
    model = RunStep
    show_change_link = False
    fields = ["name", "agent", "status", "attempt", "lease_expires_at", "duration_ms", "checkpoint_id", "error"]
    readonly_fields = fields


class ArtifactInline(ReadOnlyInline):
    model = Artifact
    fk_name = "run"
    fields = ["public_id", "type", "version", "agent_name", "created_at"]
    readonly_fields = fields


class ApprovalInline(ReadOnlyInline):
    model = Approval
    fields = ["public_id", "step", "state", "decided_by", "comment", "created_at", "decided_at"]
    readonly_fields = fields


@admin.register(Campaign)
class CampaignRunsAdmin(CampaignAdmin):
    inlines = [RunInline]
    actions = ["start_run"]

    @admin.action(description="Start a run of the selected campaigns")
    def start_run(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _each(
            self,
            request,
            queryset,
            "Started runs for",
            lambda campaign: services.run_start(campaign=campaign, created_by=request.user),
        )

    def has_delete_permission(self, request: HttpRequest, obj: Campaign | None = None) -> bool:
        # The same rule as the API: a campaign with an active run is cancelled first, then deleted.
        if obj is not None and obj.runs.exclude(state__in=FINISHED_STATES).exists():
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Campaign) -> None:
        self.delete_queryset(request, Campaign.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset:
            try:
                services.campaign_delete(campaign=campaign)
            except Conflict as exc:
                self.message_user(request, f"{campaign}: {exc}", messages.WARNING)

    def get_deleted_objects(self, objs, request: HttpRequest):
        """The event log is read-only in the admin, but it goes with its campaign: its rows must not
        count as objects the operator lacks permission to delete."""
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(CampaignEvent._meta.verbose_name)
        return deleted, model_count, perms_needed, protected


@admin.register(OrchestrationRun)
class OrchestrationRunAdmin(admin.ModelAdmin):
    list_display = [
        "public_id",
        "campaign",
        "kind",
        "state",
        "attempts",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "cancel_requested",
        "created_at",
        "finished_at",
    ]
    list_filter = ["state", "kind", "cancel_requested", "created_at"]
    search_fields = ["public_id", "campaign__public_id", "campaign__name", "error"]
    list_select_related = ["campaign"]
    readonly_fields = [
        "live_page",
        "public_id",
        "campaign",
        "kind",
        "state",
        "plan",
        "settings",
        "attempts",
        "error",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "progress",
        "heartbeat_at",
        "cancel_requested",
        "cancel_requested_by",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "events",
    ]
    date_hierarchy = "created_at"
    inlines = [StepInline, ArtifactInline, ApprovalInline]
    actions = ["cancel_runs", "retry_runs"]

    @admin.display(description="Live page")
    def live_page(self, run: OrchestrationRun) -> str:
        return format_html('<a href="{}">Watch {} live</a>', run.campaign.get_absolute_url(), run.campaign.name)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Runs are started through the run services (admin action, API), never typed in by hand.
        return False

    @admin.display(description="Events")
    def events(self, run: OrchestrationRun) -> str:
        return CampaignEventAdmin.run_events(run.campaign_id, run.public_id)

    @admin.action(description="Cancel the selected runs")
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[OrchestrationRun]) -> None:
        _each(self, request, queryset, "Cancelled", lambda run: services.run_cancel(run=run, requested_by=request.user))

    @admin.action(description="Retry the selected runs from their last checkpoint")
    def retry_runs(self, request: HttpRequest, queryset: QuerySet[OrchestrationRun]) -> None:
        _each(self, request, queryset, "Retried", lambda run: services.run_retry(run=run, requested_by=request.user))


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ["public_id", "campaign", "type", "version", "agent_name", "run", "created_at"]
    list_filter = ["type", "agent_name", "created_at"]
    search_fields = ["public_id", "campaign__public_id", "campaign__name", "content"]
    list_select_related = ["campaign", "run"]
    readonly_fields = ["public_id", "campaign", "run", "type", "version", "agent_name", "created_at"]
    actions = ["request_revision"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Request a revision of the selected artifacts")
    def request_revision(self, request: HttpRequest, queryset: QuerySet[Artifact]) -> HttpResponse | None:
        instructions = request.POST.get("instructions", "").strip()
        if "apply" in request.POST and instructions:
            _each(
                self,
                request,
                queryset,
                "Requested revisions of",
                lambda artifact: services.revision_start(
                    campaign=artifact.campaign,
                    artifact_type=artifact.type,
                    instructions=instructions,
                    created_by=request.user,
                ),
            )
            return None
        if "apply" in request.POST:
            self.message_user(request, "Write the instructions for the agent.", messages.ERROR)
        context = {
            **self.admin_site.each_context(request),
            "title": "Request a revision",
            "artifacts": queryset,
            "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/orchestration/revision.html", context)


@admin.register(ComplianceAudit)
class ComplianceAuditAdmin(admin.ModelAdmin):
    list_display = ["run", "campaign", "score", "is_compliant", "audited_at"]
    list_filter = ["is_compliant", "audited_at"]
    search_fields = ["run__public_id", "campaign__public_id", "campaign__name", "feedback"]
    list_select_related = ["campaign", "run"]
    readonly_fields = ["campaign", "run", "score", "is_compliant", "issues", "feedback", "audited_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ["public_id", "run", "step", "state", "decided_by", "created_at", "decided_at"]
    list_filter = ["state", "step", "created_at"]
    search_fields = ["public_id", "run__public_id", "comment"]
    list_select_related = ["run", "decided_by"]
    readonly_fields = [
        "public_id",
        "run",
        "step",
        "reason",
        "tool",
        "state",
        "decided_by",
        "comment",
        "created_at",
        "decided_at",
    ]
    actions = ["approve", "reject"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def _decide(self, request: HttpRequest, queryset: QuerySet[Approval], decision: str, verb: str) -> None:
        def decide(approval: Approval) -> None:
            services.approval_decide(
                run=approval.run, approval_public_id=approval.public_id, decision=decision, decided_by=request.user
            )

        _each(self, request, queryset.select_related("run"), verb, decide)

    @admin.action(description="Approve the selected approvals")
    def approve(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        self._decide(request, queryset, "approve", "Approved")

    @admin.action(
        description="Reject the selected approvals (a tool is cancelled; a review needs feedback: use the page)"
    )
    def reject(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        self._decide(request, queryset, "reject", "Rejected")


class PlanCreateForm(forms.ModelForm):
    """A new plan: made by the service (orchestration.services.plan_create), as every door makes one."""

    agents = forms.MultipleChoiceField(
        choices=[(agent, agent) for agent in plan_.AGENTS],
        initial=list(plan_.AGENTS),
        widget=forms.CheckboxSelectMultiple,
        help_text="The agents the plan may use.",
    )

    class Meta:
        model = OrchestrationPlan
        fields = ["campaign", "goal", "strategy"]


@admin.register(OrchestrationPlan)
class OrchestrationPlanAdmin(admin.ModelAdmin):
    list_display = ["public_id", "campaign", "strategy", "goal", "run", "created_by", "created_at"]
    list_filter = ["strategy", "created_at"]
    search_fields = ["public_id", "campaign__public_id", "campaign__name", "goal"]
    list_select_related = ["campaign", "run", "created_by"]
    readonly_fields = ["public_id", "campaign", "goal", "strategy", "steps", "run", "created_by", "created_at"]
    raw_id_fields = ["campaign"]
    actions = ["execute"]

    def get_form(self, request: HttpRequest, obj: OrchestrationPlan | None = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = PlanCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: OrchestrationPlan | None = None) -> list[str]:
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: OrchestrationPlan | None = None) -> list[str]:
        return self.readonly_fields if obj is not None else ["campaign", "goal", "strategy", "agents"]

    def has_change_permission(self, request: HttpRequest, obj: OrchestrationPlan | None = None) -> bool:
        return obj is None and super().has_change_permission(request)  # a plan is kept as it was made

    def has_view_permission(self, request: HttpRequest, obj: OrchestrationPlan | None = None) -> bool:
        return super().has_view_permission(request, obj) or super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: OrchestrationPlan, form: Any, change: bool) -> None:
        made = services.plan_create(
            campaign=form.cleaned_data["campaign"],
            goal=form.cleaned_data["goal"],
            strategy=form.cleaned_data["strategy"],
            agents=form.cleaned_data["agents"],
            created_by=request.user,
        )
        obj.pk, obj.public_id, obj.steps, obj._state.adding = made.pk, made.public_id, made.steps, False

    @admin.action(description="Execute the selected plans")
    def execute(self, request: HttpRequest, queryset: QuerySet[OrchestrationPlan]) -> None:
        _each(
            self, request, queryset, "Started", lambda plan: services.plan_execute(plan=plan, created_by=request.user)
        )


@admin.register(RunLimit)
class RunLimitAdmin(ConfigChangesAdmin):
    """An account's own limit on its active runs, instead of RUNS_MAX_ACTIVE_PER_USER (0: no limit).
    Raising it, or removing it for a higher default, starts the account's queued runs at once."""

    list_display = ["user", "max_active_runs", "queued_runs", "updated_at"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]

    @admin.display(description="queued runs")
    def queued_runs(self, obj: RunLimit) -> int:
        return runs_queued(obj.user_id).count()

    def save_model(self, request: HttpRequest, obj: RunLimit, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        fairshare.runs_promote(owner_id=obj.user_id)

    def delete_model(self, request: HttpRequest, obj: RunLimit) -> None:
        super().delete_model(request, obj)
        fairshare.runs_promote(owner_id=obj.user_id)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for limit in queryset.select_related("user"):
            self.delete_model(request, limit)
