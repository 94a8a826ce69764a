"""What `/api/schema/` adds to drf-spectacular's view of the API, so the schema tells the truth.

drf-spectacular documents the success answers from the views and serializers. This module adds
what it cannot see, in one place (wired in ``SPECTACULAR_SETTINGS``):

- **Error answers** (``document_errors``): every operation lists the error statuses it can really
  give, in the one error shape (``{"detail": "…"}``; per-field lists for a 400), decided from what
  the operation is: 400 everywhere (a malformed request; field errors where a body or a validated
  query string is read), 401 where credentials are needed, 403 for staff-only views and for unsafe
  methods under session authentication (CSRF), 404 where an id is in the path or a page is asked
  for, 413/415 where a body is read, 409 where a service refuses a state change (``CONFLICTS``),
  503 with ``Retry-After`` everywhere (marketing_agents/errors.py).
  405 is not an operation's answer: a method the schema does not list gets 405 with ``Allow``.
  429 with ``Retry-After`` where a password is checked (``LOCKOUTS``: too many failed logins,
  accounts/lockout.py) and where credentials are needed (the per-user rate limit,
  accounts/throttling.py).
- **Text fields** (``TextFieldSchema``): what a DRF ``CharField`` really accepts (no NUL character;
  when it may not be blank, at least one character that is not whitespace, as ``str.strip`` sees it).
- **Campaign settings** (``settings_schema``): the keys campaigns/validation.py accepts, with their
  bounds.
- **The events page** (``CampaignEventListSchema``): ``after``/``limit`` with the bounds the view
  validates them with (an empty value means the default), and the page's shape.
- **OpenAPI links** (``LINK_SOURCES``): a created campaign's id feeds the operations on it, a run's
  id the operations on the run, so clients and stateful testers (schemathesis) can follow them.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.extensions import OpenApiSerializerFieldExtension, OpenApiViewExtension
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAuthenticated

from marketing_agents.errors import RETRY_AFTER_SECONDS

UNSAFE_METHODS = {"post", "put", "patch", "delete"}
ERROR = "#/components/schemas/Error"
VALIDATION_ERROR = "#/components/schemas/ValidationError"

# Operations a service can refuse because of the state of things (campaigns.errors.Conflict).
CONFLICTS = {
    "campaigns_destroy": "The campaign has an active run; cancel it first.",
    "campaigns_runs_create": "A run of this campaign is still active.",
    "campaigns_artifacts_revisions_create": "The campaign has no artifact of this type yet, or a run is active.",
    "runs_cancel_create": "The run has already finished.",
    "runs_retry_create": "The run neither failed nor was cancelled, or another run of the campaign is active.",
    "runs_approvals_create": "The approval has already been decided, or its run no longer waits for it.",
    "campaigns_messages_create": "A run of the campaign is active: its agents are busy.",
    "campaigns_tools_create": "A run of the campaign is active: its agents are busy.",
    "plans_execute_create": "The plan was executed already, or a run of its campaign is active.",
}

# Operations outside the project (djangorestframework-simplejwt) that answer 401 on bad credentials.
CREDENTIAL_CHECKS = {
    "auth_token_create": "Wrong username or password, or an inactive account.",
    "auth_token_refresh_create": "The refresh token is invalid or expired.",
}

# Operations that check a password, and so refuse a locked-out login (accounts/lockout.py).
LOCKOUTS = {"auth_token_create"}

# Where a path parameter's value comes from: (operationId, status) -> {parameter: JSON pointer}.
LINK_SOURCES = {
    ("campaigns_create", "201"): {"campaign_id": "/id"},
    ("campaigns_list", "200"): {"campaign_id": "/results/0/id"},
    ("campaigns_runs_create", "202"): {"campaign_id": "/campaign_id", "run_id": "/id"},
    ("campaigns_runs_list", "200"): {"run_id": "/results/0/id"},
    ("campaigns_artifacts_revisions_create", "202"): {"run_id": "/id"},
    ("runs_retrieve", "200"): {"campaign_id": "/campaign_id", "run_id": "/id", "approval_id": "/approvals/0/id"},
    ("runs_cancel_create", "202"): {"run_id": "/run_id"},
    ("runs_retry_create", "202"): {"run_id": "/id"},
    ("campaigns_plans_create", "201"): {"campaign_id": "/session_id", "plan_id": "/id"},
    ("plans_execute_create", "202"): {"run_id": "/id"},
    ("campaigns_messages_create", "202"): {"run_id": "/id"},
    ("campaigns_tools_create", "202"): {"run_id": "/id", "approval_id": "/approvals/0/id"},
}


# --- Text fields ----------------------------------------------------------------------------------


def _char_class(chars: list[str]) -> str:
    """A regex character class body matching exactly ``chars`` (``\\uXXXX`` escapes, ranges)."""
    codes = sorted(ord(c) for c in chars)
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(f"\\u{low:04x}" if low == high else f"\\u{low:04x}-\\u{high:04x}" for low, high in ranges)


@cache
def text_patterns() -> tuple[str, str]:
    """(a text of one or more characters, none NUL; the same with one that is not whitespace either).

    DRF refuses NUL in every CharField, and a CharField that may not be blank refuses a text that
    ``str.strip()`` empties; ``\\s`` differs between ECMAScript and Python, so the whitespace is
    spelled out. A field that may be blank gets the first pattern and, from drf-spectacular, the
    empty string as the other branch of a ``oneOf``."""
    blank = _char_class(["\0", *(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())])
    return "^[^\\u0000]+$", f"^[^\\u0000]*[^{blank}][^\\u0000]*$"


class TextFieldSchema(OpenApiSerializerFieldExtension):
    """A text field of a request body documents the characters it refuses."""

    target_class = "rest_framework.fields.CharField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        field = self.target
        plain_text = schema.get("type") == "string" and not {"format", "pattern", "enum"} & schema.keys()
        if direction == "request" and plain_text:
            some_text, non_blank = text_patterns()
            schema["pattern"] = non_blank if field.trim_whitespace and not field.allow_blank else some_text
        return schema


# --- Campaign settings ----------------------------------------------------------------------------


def _accepted(value: dict[str, Any]) -> bool:
    from campaigns.validation import validate_settings

    try:
        validate_settings(value)
    except DjangoValidationError:
        return False
    return True


def settings_schema(*, request: bool) -> dict[str, Any]:
    """The settings object campaigns/validation.py accepts. In a request, ``simulate`` is listed only
    where this server accepts it (simulation may be switched off)."""
    from campaigns.validation import SETTINGS_MAX_BYTES, SIMULATION_KEYS, SIMULATION_STEPS

    step = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **{
                key: {"type": "integer", "minimum": low, "maximum": high}
                for key, (low, high) in SIMULATION_KEYS.items()
            },
            "fail_permanently": {"type": "boolean"},
        },
    }
    properties: dict[str, Any] = {
        "require_approval": {"type": "boolean", "description": "Wait for a person after generation."},
        "max_tokens": {"type": "integer", "minimum": 1, "description": "The run's token budget."},
        "max_cost": {"type": "number", "minimum": 0, "description": "The run's cost budget."},
        "strategy": {
            "type": "string",
            "enum": ["parallel", "sequential"],
            "description": "How the generation steps are scheduled: parallel (the default: ShortCopy and Visual "
            "together once the Copy is done) or sequential (one at a time, in the plan's order).",
        },
    }
    if not request or _accepted({"simulate": {}}):
        properties["simulate"] = {
            "type": "object",
            "additionalProperties": False,
            "description": "Make the template provider fail or slow down (tests and demos).",
            "properties": {name: step for name in SIMULATION_STEPS},
        }
    return {
        "type": "object",
        "additionalProperties": False,
        "description": f"Campaign or run settings; unknown keys are refused. At most {SETTINGS_MAX_BYTES} bytes.",
        "properties": properties,
    }


# --- The events page ------------------------------------------------------------------------------


class EventSerializer(serializers.Serializer):
    """A durable event: the socket's ``event`` frame without ``type``."""

    event = serializers.CharField()
    campaign_id = serializers.CharField()
    run_id = serializers.CharField(allow_null=True)
    sequence = serializers.IntegerField(min_value=1)
    emitted_at = serializers.DateTimeField()
    data = serializers.DictField()


class EventPageSerializer(serializers.Serializer):
    count = serializers.IntegerField(min_value=0, help_text="Events with a sequence greater than `after`.")
    next = serializers.URLField(allow_null=True, help_text="The following page, or null.")
    previous = serializers.CharField(allow_null=True, help_text="Always null: pages go forward by sequence.")
    results = EventSerializer(many=True)


class CampaignEventListSchema(OpenApiViewExtension):
    """``after`` and ``limit`` are documented from the serializer the view validates them with."""

    target_class = "realtime.api.CampaignEventList"

    def view_replacement(self) -> type:
        from realtime.api import EventQuerySerializer

        @extend_schema_view(get=extend_schema(parameters=[EventQuerySerializer], responses=EventPageSerializer))
        class CampaignEventList(self.target_class):
            pass

        return CampaignEventList


# --- Hooks ----------------------------------------------------------------------------------------


def load_extensions(endpoints: list[Any], **kwargs: Any) -> list[Any]:
    """Preprocessing hook: the endpoints are unchanged; listing it in the settings imports this module
    before drf-spectacular inspects the views, which registers the extensions above."""
    return endpoints


def _error(description: str, schema: str = ERROR, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": schema}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _views(generator: Any) -> dict[tuple[str, str], type]:
    return {(path, method.lower()): callback.cls for path, _regex, method, callback in generator.endpoints}


def _error_responses(operation: dict[str, Any], method: str, view: type | None) -> dict[str, dict[str, Any]]:
    parameters = operation.get("parameters", [])
    path_parameters = [p["name"] for p in parameters if p["in"] == "path"]
    query_parameters = [p["name"] for p in parameters if p["in"] == "query"]
    security = [scheme for requirement in operation.get("security", []) for scheme in requirement]
    operation_id = operation.get("operationId", "")
    has_body = "requestBody" in operation
    errors: dict[str, dict[str, Any]] = {}

    malformed = 'A malformed request (a `Host` the server does not serve, say): `{"detail": "…"}`.'
    if has_body or set(query_parameters) - {"page"}:
        errors["400"] = _error(
            "Invalid input; nothing was changed. Field errors name each field: "
            '`{"name": ["This field may not be blank."]}` (`non_field_errors` for the body as a whole); '
            f'a body that cannot be read: `{{"detail": "…"}}`. {malformed}',
            VALIDATION_ERROR,
        )
    else:
        errors["400"] = _error(malformed)
    if security or operation_id in CREDENTIAL_CHECKS:
        errors["401"] = _error(
            CREDENTIAL_CHECKS.get(operation_id, "No valid credentials: a missing, invalid or expired token."),
            headers={
                "WWW-Authenticate": {
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "How to authenticate: `Bearer`.",
                }
            },
        )
    staff_only = view is not None and any(
        permission not in (IsAuthenticated, AllowAny) for permission in getattr(view, "permission_classes", [])
    )
    csrf = "cookieAuth" in security and method in UNSAFE_METHODS
    if staff_only or csrf:
        reasons = (["Staff only."] if staff_only else []) + (
            ["With session authentication, a missing or wrong CSRF token."] if csrf else []
        )
        errors["403"] = _error(" ".join(reasons))
    if path_parameters or "page" in query_parameters:
        errors["404"] = _error(
            "Not found: no such object, one the caller may not see (the same answer), or a page past the last."
        )
    if operation_id in CONFLICTS:
        errors["409"] = _error(CONFLICTS[operation_id])
    if operation_id in LOCKOUTS or security:
        why = (
            "Too many failed logins for this username or from this address; nothing was checked."
            if operation_id in LOCKOUTS
            else "Over the rate limit of this user (or API key): `API_RATE_PER_MINUTE`; nothing was done."
        )
        errors["429"] = _error(
            f"{why} Try again after `Retry-After` seconds.",
            headers={
                "Retry-After": {
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                    "description": "Seconds until logins are accepted again.",
                }
            },
        )
    if has_body:
        errors["413"] = _error(f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
        errors["415"] = _error("The body is not `application/json`.")
    errors["503"] = _error(
        "The database or the message broker is down; nothing was changed. Try again after `Retry-After` seconds.",
        headers={
            "Retry-After": {
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "example": RETRY_AFTER_SECONDS},
                "description": "Seconds to wait before trying again.",
            }
        },
    )
    return errors


def _links(paths: dict[str, Any]) -> None:
    operations = {
        operation["operationId"]: operation
        for item in paths.values()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    }
    consumers = {
        operation_id: {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"} - {"artifact_type"}
        for operation_id, operation in operations.items()
    }
    for (producer, status), pointers in LINK_SOURCES.items():
        response = operations[producer]["responses"][status]
        links = response.setdefault("links", {})
        for consumer, needs in sorted(consumers.items()):
            if needs and needs <= pointers.keys():
                links[consumer] = {
                    "operationId": consumer,
                    "parameters": {name: f"$response.body#{pointers[name]}" for name in sorted(needs)},
                }


def document_errors(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: error answers, settings, text rules and links (see the module docstring)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = {
        "type": "object",
        "description": "Every error answer: a message meant for a person, never a stack trace.",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    }
    schemas["ValidationError"] = {
        "type": "object",
        "description": "A refused input: a list of messages per field, or `detail` for the request as a whole.",
        "properties": {"detail": {"type": "string"}},
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
        "minProperties": 1,
    }
    schemas["CampaignSettings"] = settings_schema(request=False)
    schemas["CampaignSettingsRequest"] = settings_schema(request=True)
    for name, schema in schemas.items():
        settings_property = schema.get("properties", {}).get("settings")
        if name.endswith("Request") and settings_property == {"$ref": "#/components/schemas/CampaignSettings"}:
            settings_property["$ref"] = "#/components/schemas/CampaignSettingsRequest"
    # A rejection needs a comment: it is the feedback the agent rewrites with (orchestration.services).
    schemas["ApprovalDecisionRequest"]["anyOf"] = [
        {"properties": {"decision": {"enum": ["approve"]}}},
        {"properties": {"comment": {"pattern": text_patterns()[1]}}, "required": ["comment"]},
    ]

    views = _views(generator)
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            for status, response in _error_responses(operation, method, views.get((path, method))).items():
                operation["responses"].setdefault(status, response)
    _links(result.get("paths", {}))
    return result
