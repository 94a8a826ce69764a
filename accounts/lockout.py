"""Logins that cannot be brute-forced: django-axes counts failed logins per username and per client
address on every door that takes a password (the token endpoint, the admin, the pages' login) and,
past ``LOGIN_FAILURE_LIMIT`` failures, refuses further attempts for ``LOGIN_LOCKOUT_SECONDS`` before
any password is hashed (its backend comes first in AUTHENTICATION_BACKENDS and stops
``authenticate``). Operators see and clear lockouts in the admin (Axes → Access attempts).

This module is what axes calls back: the client's address, and the refusal (429 with Retry-After:
JSON ``{"detail"}`` under /api/, a page elsewhere).
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework.response import Response
from rest_framework_simplejwt.views import TokenObtainPairView


def client_ip(request: HttpRequest) -> str | None:
    """The address daphne gives the request (the balancer's X-Forwarded-For where one is trusted);
    None when there is none that is an IP address (a login made in-process, say)."""
    address = request.META.get("REMOTE_ADDR") or ""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def forget_failures(username: str) -> None:
    """A successful login clears the failures of its username (never those of its address: someone
    guessing another user's password must not lift the lockout by logging in to their own account)."""
    from axes.models import AccessAttempt

    AccessAttempt.objects.filter(username=username).delete()


@receiver(user_logged_in)
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    forget_failures(user.get_username())


def lockout_seconds() -> int:
    return max(1, math.ceil(settings.AXES_COOLOFF_TIME.total_seconds()))


def lockout_message() -> str:
    """``Retry-After`` and the message give the whole lockout time: the most there is left (the
    lockout began at the last failure that counted, which may be a little earlier)."""
    seconds = lockout_seconds()
    wait = f"{math.ceil(seconds / 60)} minutes" if seconds >= 120 else f"{seconds} seconds"
    return f"Too many failed logins. Try again in {wait}."


def lockout_response(request: Any, original_response: Any = None, credentials: Any = None) -> HttpResponse:
    """The refusal of a locked-out login (axes' AXES_LOCKOUT_CALLABLE)."""
    headers = {"Retry-After": str(lockout_seconds())}
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": lockout_message()}, status=429, headers=headers)
    response = render(request, "registration/locked_out.html", {"message": lockout_message()}, status=429)
    response["Retry-After"] = headers["Retry-After"]
    return response


class TokenObtainView(TokenObtainPairView):
    """``POST /api/auth/token/`` behind the lockout. simplejwt authenticates with DRF's request, on
    which axes flags a locked-out attempt (the middleware sees Django's request): answered here. It
    never logs the user in (no ``user_logged_in``), so a success clears the failures here."""

    def post(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        response = super().post(request, *args, **kwargs)
        username = request.data.get("username") if isinstance(request.data, dict) else None
        if response.status_code == 200 and isinstance(username, str):
            forget_failures(username)
        return response

    def handle_exception(self, exc: Exception) -> Response:
        if getattr(self.request, "axes_locked_out", False):
            return Response({"detail": lockout_message()}, status=429, headers={"Retry-After": str(lockout_seconds())})
        return super().handle_exception(exc)
