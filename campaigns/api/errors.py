"""DRF exception handler: every error is JSON, never a stack trace or an HTML page."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

from campaigns.errors import Conflict, NotFound, ServiceError, Unavailable
from marketing_agents.errors import RETRY_AFTER_SECONDS, unavailable_detail

logger = logging.getLogger(__name__)

_SERVICE_STATUS = {
    Conflict: status.HTTP_409_CONFLICT,
    NotFound: status.HTTP_404_NOT_FOUND,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    detail = unavailable_detail(exc)
    if detail is not None:
        return Response({"detail": detail}, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, ServiceError):
        # By the nearest class that has a status (a service's own subclass, e.g. Busy, is its parent's).
        found = (_SERVICE_STATUS.get(cls) for cls in type(exc).__mro__)
        code = next((code for code in found if code is not None), status.HTTP_400_BAD_REQUEST)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if isinstance(exc, Unavailable) else None
        return Response({"detail": str(exc)}, status=code, headers=headers)
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": "The request body is too large."}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, SuspiciousOperation):
        return Response({"detail": "The request was malformed."}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    view = context.get("view")
    logger.exception("unhandled error in %s", type(view).__name__ if view else "API view")
    return Response({"detail": "Internal server error."}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
