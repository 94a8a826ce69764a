from django.contrib import admin
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.urls import include, path, re_path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter
from rest_framework_simplejwt.views import TokenRefreshView

from accounts.api import AccountDetail, ApiKeyDetail, ApiKeyList
from accounts.lockout import TokenObtainView
from marketing_agents import errors, health
from orchestration.api import (
    AgentMessage,
    ApprovalDecide,
    ArtifactRevision,
    CampaignArtifactList,
    CampaignPlanList,
    CampaignRunList,
    CampaignViewSet,
    PlanDetail,
    PlanExecute,
    RunCancel,
    RunDetail,
    RunRetry,
    ToolCall,
)
from realtime import pages as realtime_pages
from realtime.api import ActiveRuns, CampaignEventList, CampaignSnapshot, NoticeCreate, RealtimePresence
from realtime.metrics import metrics_view
from realtime.signalr import http as signalr
from webhooks.api import WebhookDeliveryList, WebhookDetail, WebhookList, WebhookTest

# Admin pages of models that moved out of the campaigns app: operators' bookmarks still lead there.
MOVED_ADMIN_MODELS = {
    "orchestrationrun": "orchestration",
    "artifact": "orchestration",
    "complianceaudit": "orchestration",
    "approval": "orchestration",
    "campaignevent": "eventlog",
}


def moved_admin_page(request: HttpRequest, model: str, rest: str) -> HttpResponsePermanentRedirect:
    query = request.META.get("QUERY_STRING", "")
    url = f"/admin/{MOVED_ADMIN_MODELS[model]}/{model}/{rest}"
    return HttpResponsePermanentRedirect(f"{url}?{query}" if query else url)


router = DefaultRouter()
router.include_root_view = False
router.register("campaigns", CampaignViewSet, basename="campaign")

api_patterns = [
    path("auth/token/", TokenObtainView.as_view(), name="token-obtain"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("campaigns/<str:campaign_id>/artifacts/", CampaignArtifactList.as_view(), name="campaign-artifacts"),
    path("campaigns/<str:campaign_id>/snapshot/", CampaignSnapshot.as_view(), name="campaign-snapshot"),
    path("campaigns/<str:campaign_id>/events/", CampaignEventList.as_view(), name="campaign-events"),
    path("campaigns/<str:campaign_id>/runs/", CampaignRunList.as_view(), name="campaign-runs"),
    path(
        "campaigns/<str:campaign_id>/artifacts/<str:artifact_type>/revisions/",
        ArtifactRevision.as_view(),
        name="artifact-revisions",
    ),
    path("campaigns/<str:campaign_id>/plans/", CampaignPlanList.as_view(), name="campaign-plans"),
    path("campaigns/<str:campaign_id>/messages/", AgentMessage.as_view(), name="campaign-messages"),
    path("campaigns/<str:campaign_id>/tools/", ToolCall.as_view(), name="campaign-tools"),
    path("plans/<str:plan_id>/", PlanDetail.as_view(), name="plan-detail"),
    path("plans/<str:plan_id>/execute/", PlanExecute.as_view(), name="plan-execute"),
    path("runs/<str:run_id>/", RunDetail.as_view(), name="run-detail"),
    path("runs/<str:run_id>/cancel/", RunCancel.as_view(), name="run-cancel"),
    path("runs/<str:run_id>/retry/", RunRetry.as_view(), name="run-retry"),
    path("runs/<str:run_id>/approvals/<str:approval_id>/", ApprovalDecide.as_view(), name="run-approval"),
    path("account/", AccountDetail.as_view(), name="account"),
    path("keys/", ApiKeyList.as_view(), name="api-keys"),
    path("keys/<str:key_id>/", ApiKeyDetail.as_view(), name="api-key"),
    path("webhooks/", WebhookList.as_view(), name="webhooks"),
    path("webhooks/<str:webhook_id>/", WebhookDetail.as_view(), name="webhook"),
    path("webhooks/<str:webhook_id>/deliveries/", WebhookDeliveryList.as_view(), name="webhook-deliveries"),
    path("webhooks/<str:webhook_id>/test/", WebhookTest.as_view(), name="webhook-test"),
    path("notices/", NoticeCreate.as_view(), name="notices"),
    path("ops/realtime/", RealtimePresence.as_view(), name="ops-realtime"),
    path("ops/runs/", ActiveRuns.as_view(), name="ops-runs"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include(router.urls)),
]

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("campaigns/", realtime_pages.campaign_list, name="campaign-list"),
    path("campaigns/<str:campaign_id>/", realtime_pages.campaign_page, name="campaign-page"),
    path("console/", realtime_pages.console, name="console"),
    re_path(rf"^admin/campaigns/(?P<model>{'|'.join(MOVED_ADMIN_MODELS)})/(?P<rest>.*)$", moved_admin_page),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    path("hubs/campaign/negotiate", signalr.negotiate, name="signalr-negotiate"),
    path("hubs/campaign", signalr.http_transport, name="signalr-http-transports"),  # not served: says so
    # The track-4 hubs (docs/SIGNALR.md): the same negotiate and transports.
    path("hubs/orchestrator/negotiate", signalr.negotiate, name="signalr-orchestrator-negotiate"),
    path("hubs/orchestrator", signalr.http_transport, name="signalr-orchestrator-http-transports"),
    path("hubs/agent/negotiate", signalr.negotiate, name="signalr-agent-negotiate"),
    path("hubs/agent", signalr.http_transport, name="signalr-agent-http-transports"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]

handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.not_found
handler500 = errors.server_error
