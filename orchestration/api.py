"""REST views for campaigns (with their latest run), artifacts, runs, approvals and revisions:
parse, authorize, call a service or selector, answer."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, mixins, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns import services as campaign_services
from campaigns.models import Campaign
from campaigns.selectors import campaign_get_visible
from orchestration import plan as plan_
from orchestration import selectors, services
from orchestration.models import ARTIFACT_ORDER, Approval, Artifact, OrchestrationPlan, OrchestrationRun
from orchestration.payloads import approval_payload, plan_payload, run_payload
from orchestration.selectors import run_get_visible
from orchestration.serializers import (
    AgentMessageSerializer,
    ApprovalDecisionSerializer,
    ApprovalSerializer,
    ArtifactSerializer,
    CampaignSerializer,
    PlanCreateSerializer,
    PlanSerializer,
    RevisionSerializer,
    RunSerializer,
    RunStartSerializer,
    ToolCallSerializer,
)


class CampaignViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = CampaignSerializer
    lookup_field = "public_id"
    lookup_url_kwarg = "campaign_id"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Campaign]:
        return selectors.campaigns_with_latest_run(self.request.user)

    def get_object(self) -> Campaign:
        return selectors.campaign_with_latest_run(self.request.user, self.kwargs["campaign_id"])

    def perform_create(self, serializer: CampaignSerializer) -> None:
        campaign = campaign_services.campaign_create(owner=self.request.user, **serializer.validated_data)
        serializer.instance = selectors.campaign_with_latest_run(self.request.user, campaign.public_id)

    def perform_update(self, serializer: CampaignSerializer) -> None:
        campaign_services.campaign_update(campaign=serializer.instance, **serializer.validated_data)
        serializer.instance = selectors.campaign_with_latest_run(self.request.user, serializer.instance.public_id)

    def perform_destroy(self, instance: Campaign) -> None:
        services.campaign_delete(campaign=instance)


class CampaignArtifactList(generics.ListAPIView):
    serializer_class = ArtifactSerializer

    @extend_schema(
        parameters=[OpenApiParameter("type", str, enum=[str(t) for t in ARTIFACT_ORDER], required=False)],
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Artifact]:
        campaign = campaign_get_visible(self.request.user, self.kwargs["campaign_id"])
        artifact_type = self.request.query_params.get("type")
        if artifact_type is not None and artifact_type not in ARTIFACT_ORDER:
            raise ValidationError({"type": [f"Unknown artifact type; use one of {', '.join(ARTIFACT_ORDER)}."]})
        return selectors.campaign_artifacts(campaign, artifact_type=artifact_type)


class CampaignRunList(generics.ListAPIView):
    serializer_class = RunSerializer

    def get_queryset(self) -> QuerySet[OrchestrationRun]:
        campaign = campaign_get_visible(self.request.user, self.kwargs["campaign_id"])
        return (
            campaign.runs.select_related("campaign")
            .prefetch_related("steps", Prefetch("approvals", Approval.objects.select_related("decided_by")))
            .order_by("-created_at", "-id")
        )

    @extend_schema(request=RunStartSerializer, responses={202: RunSerializer})
    def post(self, request: Request, campaign_id: str) -> Response:
        campaign = campaign_get_visible(request.user, campaign_id)
        body = RunStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = services.run_start(campaign=campaign, created_by=request.user, settings=body.validated_data["settings"])
        return Response(run_payload(run), status=status.HTTP_202_ACCEPTED)


class RunDetail(APIView):
    @extend_schema(responses=RunSerializer)
    def get(self, request: Request, run_id: str) -> Response:
        return Response(run_payload(run_get_visible(request.user, run_id)))


class RunCancel(APIView):
    @extend_schema(
        request=None,
        responses={
            202: inline_serializer(
                "RunCancelled", {"run_id": serializers.CharField(), "state": serializers.CharField()}
            )
        },
    )
    def post(self, request: Request, run_id: str) -> Response:
        run = services.run_cancel(run=run_get_visible(request.user, run_id), requested_by=request.user)
        return Response({"run_id": run.public_id, "state": run.state}, status=status.HTTP_202_ACCEPTED)


class RunRetry(APIView):
    @extend_schema(request=None, responses={202: RunSerializer})
    def post(self, request: Request, run_id: str) -> Response:
        run = services.run_retry(run=run_get_visible(request.user, run_id), requested_by=request.user)
        return Response(run_payload(run), status=status.HTTP_202_ACCEPTED)


class ApprovalDecide(APIView):
    @extend_schema(request=ApprovalDecisionSerializer, responses={200: ApprovalSerializer})
    def post(self, request: Request, run_id: str, approval_id: str) -> Response:
        run = run_get_visible(request.user, run_id)
        body = ApprovalDecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        approval = services.approval_decide(
            run=run, approval_public_id=approval_id, decided_by=request.user, **body.validated_data
        )
        return Response(approval_payload(approval))


class ArtifactRevision(APIView):
    @extend_schema(
        request=RevisionSerializer,
        responses={202: RunSerializer},
        parameters=[
            OpenApiParameter("artifact_type", str, OpenApiParameter.PATH, enum=list(plan_.GENERATION_STEPS)),
        ],
    )
    def post(self, request: Request, campaign_id: str, artifact_type: str) -> Response:
        campaign = campaign_get_visible(request.user, campaign_id)
        body = RevisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = services.revision_start(
            campaign=campaign,
            artifact_type=artifact_type,
            instructions=body.validated_data["instructions"],
            created_by=request.user,
        )
        return Response(run_payload(run), status=status.HTTP_202_ACCEPTED)


class CampaignPlanList(generics.ListAPIView):
    """A session's plans (track-4: a session is a campaign), newest first; POST makes one."""

    serializer_class = PlanSerializer

    def get_queryset(self) -> QuerySet[OrchestrationPlan]:
        campaign = campaign_get_visible(self.request.user, self.kwargs["campaign_id"])
        return campaign.plans.select_related("campaign", "run")

    def list(self, request: Request, *args: object, **kwargs: object) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([plan_payload(plan) for plan in page])

    @extend_schema(request=PlanCreateSerializer, responses={201: PlanSerializer})
    def post(self, request: Request, campaign_id: str) -> Response:
        campaign = campaign_get_visible(request.user, campaign_id)
        body = PlanCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        plan = services.plan_create(
            campaign=campaign,
            goal=data["goal"],
            strategy=data["strategy"],
            agents=data.get("agents"),
            created_by=request.user,
        )
        return Response(plan_payload(plan), status=status.HTTP_201_CREATED)


class PlanDetail(APIView):
    @extend_schema(responses=PlanSerializer)
    def get(self, request: Request, plan_id: str) -> Response:
        return Response(plan_payload(selectors.plan_get_visible(request.user, plan_id)))


class PlanExecute(APIView):
    @extend_schema(request=None, responses={202: RunSerializer})
    def post(self, request: Request, plan_id: str) -> Response:
        plan = selectors.plan_get_visible(request.user, plan_id)
        run = services.plan_execute(plan=plan, created_by=request.user)
        return Response(run_payload(run), status=status.HTTP_202_ACCEPTED)


class AgentMessage(APIView):
    """A message to one of the campaign's agents: instructions for its next version (re-audited)."""

    @extend_schema(request=AgentMessageSerializer, responses={202: RunSerializer})
    def post(self, request: Request, campaign_id: str) -> Response:
        campaign = campaign_get_visible(request.user, campaign_id)
        body = AgentMessageSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        run = services.agent_message(
            campaign=campaign, agent=data["agent"], content=data["content"], sent_by=request.user
        )
        return Response(run_payload(run), status=status.HTTP_202_ACCEPTED)


class ToolCall(APIView):
    """One agent's tool run on its own; with require_approval it waits for a decision on its approval."""

    @extend_schema(request=ToolCallSerializer, responses={202: RunSerializer})
    def post(self, request: Request, campaign_id: str) -> Response:
        campaign = campaign_get_visible(request.user, campaign_id)
        body = ToolCallSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        run = services.tool_execute(
            campaign=campaign,
            agent=plan_.STEP_AGENTS[plan_.TOOLS[data["tool_name"]]],
            tool_name=data["tool_name"],
            parameters=data["parameters"],
            require_approval=data["require_approval"],
            requested_by=request.user,
        )
        return Response(run_payload(run), status=status.HTTP_202_ACCEPTED)
