"""Errors that services raise and every door (REST, admin, WebSocket) turns into its own answer."""

from __future__ import annotations


class ServiceError(Exception):
    """A request that cannot be done; the message is meant for a person."""

    code = "bad_request"


class Conflict(ServiceError):
    """The request contradicts the current state (HTTP 409)."""

    code = "conflict"


class NotFound(ServiceError):
    """No such object, or one the caller may not see (HTTP 404, never 403)."""

    code = "not_found"


class Unavailable(ServiceError):
    """A service the request needs (the database, the broker) is down; nothing was changed (HTTP 503)."""

    code = "unavailable"
