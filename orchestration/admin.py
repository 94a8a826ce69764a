"""Admin actions that drive runs: start, cancel, retry, and revise an artifact; a run's events.

They extend the campaigns app's admin classes (which know nothing of orchestration) and call the
same services as the REST API, so the same rules hold.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from campaigns.admin import ArtifactAdmin, CampaignAdmin, OrchestrationRunAdmin
from campaigns.errors import ServiceError
from campaigns.models import Artifact, Campaign, OrchestrationRun
from eventlog.admin import CampaignEventAdmin
from eventlog.models import CampaignEvent
from orchestration import services


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


class CampaignRunsAdmin(CampaignAdmin):
    actions = ["start_run"]

    def get_deleted_objects(self, objs, request: HttpRequest):
        """The event log is read-only in the admin, but it goes with its campaign: its rows must not
        count as objects the operator lacks permission to delete."""
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(CampaignEvent._meta.verbose_name)
        return deleted, model_count, perms_needed, protected

    @admin.action(description="Start a run of the selected campaigns")
    def start_run(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _each(
            self,
            request,
            queryset,
            "Started runs for",
            lambda campaign: services.run_start(campaign=campaign, created_by=request.user),
        )


class RunActionsAdmin(OrchestrationRunAdmin):
    actions = ["cancel_runs", "retry_runs"]
    readonly_fields = [*OrchestrationRunAdmin.readonly_fields, "events"]

    @admin.display(description="Events")
    def events(self, run: OrchestrationRun) -> str:
        return CampaignEventAdmin.run_events(run.campaign_id, run.public_id)

    @admin.action(description="Cancel the selected runs")
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[OrchestrationRun]) -> None:
        _each(self, request, queryset, "Cancelled", lambda run: services.run_cancel(run=run, requested_by=request.user))

    @admin.action(description="Retry the selected runs from their last checkpoint")
    def retry_runs(self, request: HttpRequest, queryset: QuerySet[OrchestrationRun]) -> None:
        _each(self, request, queryset, "Retried", lambda run: services.run_retry(run=run, requested_by=request.user))


class ArtifactRevisionAdmin(ArtifactAdmin):
    actions = ["request_revision"]

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


for model, model_admin in (
    (Campaign, CampaignRunsAdmin),
    (OrchestrationRun, RunActionsAdmin),
    (Artifact, ArtifactRevisionAdmin),
):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
