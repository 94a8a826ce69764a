import re
from typing import Any

from django.core.paginator import Paginator
from rest_framework import pagination, serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request

# What a client's integer looks like in a query string; Python's int() would also take " 1", "+1" or "1_0".
INTEGER = re.compile(r"-?[0-9]+")


class QueryIntegerField(serializers.IntegerField):
    """An integer query parameter, written the way a client writes one (``INTEGER``): "1.0", "+1",
    "1_0" or a non-ASCII digit are refused rather than read by Python's int()."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and not INTEGER.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class PageNumberPagination(pagination.PageNumberPagination):
    """``page`` (1, 2, …) and ``page_size`` (1–200, default 50), exactly as the schema says.

    A ``page`` that is not a page number (empty, not an integer, below 1, past the last page) is
    DRF's 404 "Invalid page."; a ``page_size`` that is not an integer from 1 to 200 is a 400 naming
    the parameter, rather than being quietly replaced by the default or capped."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    last_page_strings = ()

    def get_page_number(self, request: Request, paginator: Paginator) -> int:
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        if not INTEGER.fullmatch(raw):
            raise NotFound(
                self.invalid_page_message.format(page_number=raw, message="That page number is not an integer")
            )
        return int(raw)

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not INTEGER.fullmatch(raw):
            raise ValidationError({self.page_size_query_param: ["A valid integer is required."]})
        if not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError({self.page_size_query_param: [f"Must be from 1 to {self.max_page_size}."]})
        return int(raw)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.page_query_param,
                "required": False,
                "in": "query",
                "description": "Page number, from 1; a page past the last one is 404.",
                "schema": {"type": "integer", "minimum": 1},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Results per page (default {self.page_size}, at most {self.max_page_size}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size, "default": self.page_size},
            },
        ]
