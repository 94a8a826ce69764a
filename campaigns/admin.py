"""Operators' admin: campaigns with their runs, runs with their steps, artifacts and approvals
(the event log's admin is eventlog.admin; orchestration.admin adds the actions and the run's events)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from campaigns.errors import Conflict
from campaigns.models import (
    FINISHED_STATES,
    Approval,
    Artifact,
    Campaign,
    ComplianceAudit,
    OrchestrationRun,
    RunStep,
)
from campaigns.services import campaign_delete


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


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
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "public_id", "owner", "tone", "last_sequence", "created_at", "updated_at"]
    list_filter = ["created_at", "tone"]
    search_fields = ["public_id", "name", "brief", "audience", "owner__username"]
    readonly_fields = ["public_id", "last_sequence", "created_at", "updated_at"]
    raw_id_fields = ["owner"]
    date_hierarchy = "created_at"
    inlines = [RunInline]

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
                campaign_delete(campaign=campaign)
            except Conflict as exc:
                self.message_user(request, f"{campaign}: {exc}", messages.WARNING)


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
    ]
    date_hierarchy = "created_at"
    inlines = [StepInline, ArtifactInline, ApprovalInline]

    @admin.display(description="Live page")
    def live_page(self, run: OrchestrationRun) -> str:
        return format_html('<a href="{}">Watch {} live</a>', run.campaign.get_absolute_url(), run.campaign.name)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Runs are started through the run services (admin action, API), never typed in by hand.
        return False


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ["public_id", "campaign", "type", "version", "agent_name", "run", "created_at"]
    list_filter = ["type", "agent_name", "created_at"]
    search_fields = ["public_id", "campaign__public_id", "campaign__name", "content"]
    list_select_related = ["campaign", "run"]
    readonly_fields = ["public_id", "campaign", "run", "type", "version", "agent_name", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


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
        "state",
        "decided_by",
        "comment",
        "created_at",
        "decided_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
