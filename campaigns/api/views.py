"""REST views for campaigns and artifacts: parse, authorize, call a service or selector, answer."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, mixins, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns import selectors, services
from campaigns.api.serializers import ArtifactSerializer, CampaignSerializer
from campaigns.models import ARTIFACT_ORDER, Artifact, Campaign


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
        return selectors.campaigns_visible_to(self.request.user)

    def get_object(self) -> Campaign:
        return selectors.campaign_get_visible(self.request.user, self.kwargs["campaign_id"])

    def perform_create(self, serializer: CampaignSerializer) -> None:
        campaign = services.campaign_create(owner=self.request.user, **serializer.validated_data)
        serializer.instance = selectors.campaign_get_visible(self.request.user, campaign.public_id)

    def perform_update(self, serializer: CampaignSerializer) -> None:
        services.campaign_update(campaign=serializer.instance, **serializer.validated_data)
        serializer.instance = selectors.campaign_get_visible(self.request.user, serializer.instance.public_id)

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
        campaign = selectors.campaign_get_visible(self.request.user, self.kwargs["campaign_id"])
        artifact_type = self.request.query_params.get("type")
        if artifact_type is not None and artifact_type not in ARTIFACT_ORDER:
            raise ValidationError({"type": [f"Unknown artifact type; use one of {', '.join(ARTIFACT_ORDER)}."]})
        return selectors.campaign_artifacts(campaign, artifact_type=artifact_type)
