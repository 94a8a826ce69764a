"""API keys on the REST API (PROTOCOL.md §13): ``Authorization: Api-Key <key>`` or ``Bearer <key>``.

It comes before the JWT authentication: a bearer credential shaped like a JWT is left to it."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from accounts.selectors import api_key_user, looks_like_api_key

SCHEMES = ("api-key", "bearer")


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        scheme, _, credential = get_authorization_header(request).decode("latin-1").partition(" ")
        credential = credential.strip()
        if scheme.lower() not in SCHEMES:
            return None
        if not looks_like_api_key(credential):
            if scheme.lower() == "api-key":
                raise AuthenticationFailed("Invalid API key.")
            return None  # a JWT (or garbage): the JWT authentication answers
        found = api_key_user(credential)
        if found is None:
            raise AuthenticationFailed("Invalid or revoked API key.")
        return found

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
