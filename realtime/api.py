"""REST views over the event log and the snapshot."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.api.fields import StrictCharField
from campaigns.api.pagination import QueryIntegerField
from campaigns.payloads import isoformat
from campaigns.selectors import campaign_get_visible
from eventlog.models import CampaignEvent
from eventlog.publisher import event_frame
from eventlog.reads import EVENTS_MAX_LIMIT, campaign_events
from orchestration.payloads import active_run_payload
from orchestration.selectors import runs_active
from realtime.presence import presence_overview
from realtime.services import notice_send
from realtime.snapshots import campaign_snapshot


class EventQuerySerializer(serializers.Serializer):
    after = QueryIntegerField(min_value=0, default=0)
    limit = QueryIntegerField(min_value=1, max_value=EVENTS_MAX_LIMIT, default=100)


def rest_event(event: CampaignEvent, campaign_public_id: str) -> dict[str, Any]:
    frame = event_frame(event, campaign_public_id=campaign_public_id)
    del frame["type"]
    return frame


class CampaignEventList(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="Return events with a greater sequence (default 0)."),
            OpenApiParameter("limit", int, description=f"At most this many (default 100, max {EVENTS_MAX_LIMIT})."),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request, campaign_id: str) -> Response:
        campaign = campaign_get_visible(request.user, campaign_id)
        query = EventQuerySerializer(data=request.query_params.dict())  # a plain dict: "after=" is not absent
        query.is_valid(raise_exception=True)
        after, limit = query.validated_data["after"], query.validated_data["limit"]
        events = campaign_events(campaign, after=after, limit=limit)
        count = CampaignEvent.objects.filter(campaign=campaign, sequence__gt=after).count()
        following = None
        if len(events) < count:
            following = request.build_absolute_uri(f"{request.path}?after={events[-1].sequence}&limit={limit}")
        return Response(
            {
                "count": count,
                "next": following,
                "previous": None,
                "results": [rest_event(event, campaign.public_id) for event in events],
            }
        )


class CampaignSnapshot(APIView):
    @extend_schema(
        responses=inline_serializer(
            "CampaignSnapshot",
            {
                "campaign_id": serializers.CharField(),
                "run_id": serializers.CharField(allow_null=True),
                "current_state": serializers.CharField(),
                "completed_artifacts": serializers.ListField(child=serializers.CharField()),
                "pending_artifacts": serializers.ListField(child=serializers.CharField()),
                "audit_status": serializers.ChoiceField(["not_started", "in_progress", "completed"]),
                "last_event_sequence": serializers.IntegerField(),
                "timestamp": serializers.DateTimeField(),
                "artifacts": serializers.ListField(child=serializers.DictField()),
                "compliance": serializers.DictField(allow_null=True),
            },
        )
    )
    def get(self, request: Request, campaign_id: str) -> Response:
        campaign = campaign_get_visible(request.user, campaign_id)
        return Response(campaign_snapshot(campaign.pk))


class NoticeSerializer(serializers.Serializer):
    level = serializers.ChoiceField(["info", "warning", "critical"])
    message = StrictCharField(max_length=1000)


class NoticeCreate(APIView):
    """Staff only: send a ``system.notice`` frame to every connected client."""

    permission_classes = [IsAdminUser]

    @extend_schema(request=NoticeSerializer, responses={202: NoticeSerializer})
    def post(self, request: Request) -> Response:
        body = NoticeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        notice = notice_send(sent_by=request.user, **body.validated_data)
        return Response(
            {"level": notice.level, "message": notice.message, "sent_at": isoformat(notice.sent_at)},
            status=status.HTTP_202_ACCEPTED,
        )


class RealtimePresence(APIView):
    """Staff only: connections and subscriptions of every web process, subscribers per campaign, and the
    connection cap per user: its settings, the users holding the most connections, the refusals."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(presence_overview())


class ActiveRuns(APIView):
    """Staff only: runs active right now across all campaigns (the console polls this)."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response({"runs": [active_run_payload(run) for run in runs_active()]})
