"""REST views of the caller's account: the monthly budget and the month's spend (PROTOCOL.md §11),
and its API keys (§13)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services
from accounts.models import ApiKey
from accounts.selectors import current_period, period_label, spend_this_month
from accounts.services import API_KEY_NAME_MAX_LENGTH
from campaigns.api.fields import StrictCharField


class NumberField(serializers.DecimalField):
    """A JSON number, as PROTOCOL.md §11 has ``monthly_budget``: a string (even "5") is refused, not
    converted, so the schema's ``type: number`` is exactly what is accepted."""

    default_error_messages = {"invalid": "A number is required."}

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data == "":  # DRF would read an empty string as null here
            self.fail("invalid")
        return super().validate_empty_values(data)

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        try:
            number = Decimal(repr(data))
        except (ArithmeticError, ValueError):
            self.fail("invalid")
        if self.min_value is not None and number < self.min_value:
            self.fail("min_value", min_value=self.min_value)  # before rounding: -1e-9 must not pass as 0
        try:  # more decimals than a cent's millionth are rounded, not refused (any JSON number is one)
            data = number.quantize(Decimal(1).scaleb(-self.decimal_places))
        except (ArithmeticError, ValueError):
            self.fail("invalid")
        return super().to_internal_value(data)


class AccountSerializer(serializers.Serializer):
    username = serializers.CharField(read_only=True)
    monthly_budget = NumberField(
        max_digits=16,
        decimal_places=6,
        min_value=Decimal("0"),
        allow_null=True,
        required=True,
        coerce_to_string=False,
        help_text="Spend allowed per calendar month (UTC), in dollars; null for no budget.",
    )
    period = serializers.CharField(read_only=True, help_text="The current month, YYYY-MM (UTC).")
    spend_this_month = serializers.DecimalField(max_digits=16, decimal_places=6, read_only=True, coerce_to_string=False)


def account_payload(user: Any) -> dict[str, Any]:
    account = services.account_get(user.pk)
    payload = {
        "username": user.get_username(),
        "monthly_budget": account.monthly_budget,
        "period": period_label(current_period()),
        "spend_this_month": spend_this_month(user.pk),
    }
    return AccountSerializer(payload).data


class AccountDetail(APIView):
    """``GET``: the caller's budget and spend this month. ``PATCH {"monthly_budget"}``: set or clear
    the budget; with the budget spent, starting a run is refused with 409."""

    @extend_schema(responses=AccountSerializer)
    def get(self, request: Request) -> Response:
        return Response(account_payload(request.user))

    @extend_schema(request=AccountSerializer, responses=AccountSerializer)
    def patch(self, request: Request) -> Response:
        serializer = AccountSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        if "monthly_budget" in serializer.validated_data:
            services.account_update(user_id=request.user.pk, monthly_budget=serializer.validated_data["monthly_budget"])
        return Response(account_payload(request.user))


class ApiKeySerializer(serializers.Serializer):
    id = serializers.CharField(source="public_id", read_only=True)
    name = StrictCharField(max_length=API_KEY_NAME_MAX_LENGTH)
    created_at = serializers.DateTimeField(source="created", read_only=True)
    last_used_at = serializers.DateTimeField(read_only=True, allow_null=True)


class NewApiKeySerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="Shown only in this answer; it is stored hashed.")


class ApiKeyList(generics.ListCreateAPIView):
    """``GET``: the caller's keys (never their secrets). ``POST {"name"}``: a new key, shown once."""

    serializer_class = ApiKeySerializer

    def get_queryset(self) -> QuerySet[ApiKey]:
        return ApiKey.objects.filter(user=self.request.user, revoked=False).order_by("-created", "-pk")

    @extend_schema(request=ApiKeySerializer, responses={201: NewApiKeySerializer})
    def post(self, request: Request) -> Response:
        serializer = ApiKeySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, secret = services.api_key_create(user_id=request.user.pk, name=serializer.validated_data["name"])
        answer = {**ApiKeySerializer(key).data, "key": secret}
        return Response(answer, status=status.HTTP_201_CREATED)


class ApiKeyDetail(APIView):
    """``DELETE``: revoke the key; sockets opened with it are closed (4401) within 5 s."""

    @extend_schema(responses={204: None})
    def delete(self, request: Request, key_id: str) -> Response:
        key = ApiKey.objects.filter(user=request.user, public_id=key_id, revoked=False).first()
        if key is None:
            raise NotFound("API key not found.")
        services.api_key_revoke(key)
        return Response(status=status.HTTP_204_NO_CONTENT)
