"""Brute force on every door that takes a password (accounts/lockout.py, django-axes): the token
endpoint, the admin's login and the pages' login. Past the limit, per username and per client
address, attempts are refused with 429 and Retry-After, before any password is hashed, until the
window has passed; the failures are logged without the password; operators clear lockouts in the
admin."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import hashers
from django.test import Client
from rest_framework.test import APIClient

from campaigns.tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

LIMIT = 5
TOKEN = "/api/auth/token/"
DOORS = ["token", "admin", "pages"]


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(seconds=900)


def attempt(door: str, username: str, password: str, address: str = "127.0.0.1") -> Any:
    """One login on a door, as its client sends it."""
    if door == "token":
        body = {"username": username, "password": password}
        return APIClient().post(TOKEN, body, format="json", REMOTE_ADDR=address)
    url = "/admin/login/" if door == "admin" else "/accounts/login/"
    return Client().post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def logged_in(door: str, response: Any) -> bool:
    if door == "token":
        return response.status_code == 200 and "access" in response.json()
    return response.status_code == 302


def assert_locked_out(door: str, response: Any) -> None:
    assert response.status_code == 429, (response.status_code, response.content[:300])
    assert response["Retry-After"] == "900"
    if door == "token":
        assert response["Content-Type"].startswith("application/json")
        assert response.json() == {"detail": "Too many failed logins. Try again in 15 minutes."}
    else:
        assert "Too many failed logins. Try again in 15 minutes." in response.content.decode()


class CountingHasher:
    """Counts the password checks (the costly part of a login) while it is installed."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        original = hashers.check_password

        def counted(*args: Any, **kwargs: Any) -> bool:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(hashers, "check_password", counted)
        monkeypatch.setattr("django.contrib.auth.base_user.check_password", counted)


@pytest.mark.parametrize("door", DOORS)
def test_a_username_is_locked_out_after_the_limit_even_with_the_right_password(door, monkeypatch, caplog):
    UserFactory(username="operator", is_staff=True, is_superuser=True)
    hasher = CountingHasher(monkeypatch)
    caplog.set_level(logging.WARNING)
    for _ in range(LIMIT - 1):
        refused = attempt(door, "operator", "wrong-guess-123")
        assert refused.status_code in (401, 200), refused.status_code  # a wrong password, not yet a lockout
    assert_locked_out(door, attempt(door, "operator", "wrong-guess-123"))
    checks_before = hasher.calls

    # Locked out: even the right password is refused, from another address too, and nothing is hashed.
    assert_locked_out(door, attempt(door, "operator", PASSWORD))
    assert_locked_out(door, attempt(door, "operator", PASSWORD, address="10.0.0.9"))
    assert hasher.calls == checks_before, "a refused attempt must not run the password hasher"

    assert "operator" in caplog.text and "wrong-guess-123" not in caplog.text, "failures logged, passwords never"


@pytest.mark.parametrize("door", DOORS)
def test_an_address_is_locked_out_after_the_limit_across_usernames(door):
    UserFactory(username="mallory-target", is_staff=True)  # staff: the admin's login lets staff in only
    for number in range(LIMIT - 1):
        assert attempt(door, f"guess{number}", "x", address="10.1.1.1").status_code in (401, 200)
    assert_locked_out(door, attempt(door, "guess-last", "x", address="10.1.1.1"))
    assert_locked_out(door, attempt(door, "mallory-target", PASSWORD, address="10.1.1.1"))
    # Another address is not locked out, and the user's own login works from there.
    assert logged_in(door, attempt(door, "mallory-target", PASSWORD, address="10.2.2.2"))


def test_a_login_succeeds_again_once_the_window_has_passed(settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    UserFactory(username="alice")
    for _ in range(LIMIT):
        attempt("token", "alice", "nope")
    locked = attempt("token", "alice", PASSWORD)
    assert locked.status_code == 429 and locked["Retry-After"] == "1"
    deadline = time.monotonic() + 15
    response = attempt("token", "alice", PASSWORD)
    while response.status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.2)  # polling for the window's end, bounded by the deadline
        response = attempt("token", "alice", PASSWORD)
    assert logged_in("token", response)


def test_an_operator_sees_and_clears_a_lockout_in_the_admin(operator_client):
    UserFactory(username="alice")
    for _ in range(LIMIT):
        attempt("token", "alice", "nope", address="10.3.3.3")
    assert attempt("token", "alice", PASSWORD).status_code == 429
    changelist = operator_client.get("/admin/axes/accessattempt/")
    assert changelist.status_code == 200 and "alice" in changelist.content.decode()
    locked = AccessAttempt.objects.get(username="alice")

    cleared = operator_client.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": [str(locked.pk)], "post": "yes"},
        follow=True,
    )

    assert cleared.status_code == 200 and not AccessAttempt.objects.exists()
    assert logged_in("token", attempt("token", "alice", PASSWORD))


def test_the_attempts_stored_hold_no_password():
    UserFactory(username="alice")
    attempt("pages", "alice", "hunter2-secret")
    attempt("token", "alice", "hunter2-secret")
    for row in AccessAttempt.objects.values("get_data", "post_data", "username"):
        assert "hunter2-secret" not in row["post_data"] and "hunter2-secret" not in row["get_data"]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("door", ["token", "pages", "admin"])
def test_the_lockout_on_the_real_server(start_web, door):
    """daphne's (asynchronous) request path: the refusal, its Retry-After, and a login after the window."""
    import httpx

    server = start_web(LOGIN_FAILURE_LIMIT="3", LOGIN_LOCKOUT_SECONDS="2")
    UserFactory(username="operator", is_staff=True, is_superuser=True)

    def send(password: str) -> httpx.Response:
        with httpx.Client(base_url=server.url, follow_redirects=False, timeout=30) as client:
            if door == "token":
                return client.post(TOKEN, json={"username": "operator", "password": password})
            url = "/admin/login/" if door == "admin" else "/accounts/login/"
            form = client.get(url)
            token = form.cookies["csrftoken"]
            body = {"username": "operator", "password": password, "csrfmiddlewaretoken": token}
            return client.post(url, data=body, headers={"Referer": f"{server.url}{url}"})

    for _ in range(2):
        assert send("wrong").status_code in (200, 401)
    locked = send("wrong")
    assert locked.status_code == 429 and locked.headers["Retry-After"] == "2"
    assert "Too many failed logins. Try again in 2 seconds." in locked.text
    assert send(PASSWORD).status_code == 429
    deadline = time.monotonic() + 20
    response = send(PASSWORD)
    while response.status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.2)  # polling for the window's end, bounded by the deadline
        response = send(PASSWORD)
    assert response.status_code == (200 if door == "token" else 302), response.text[:300]


def test_logging_in_to_ones_own_account_does_not_lift_an_addresss_lockout():
    """Guesses at alice's password, then the guesser's own login from the same address, in turns: the
    address's failures are kept, so the guessing stops at the limit."""
    UserFactory(username="alice")
    UserFactory(username="mallory")
    for _ in range(2):
        for _ in range(2):
            assert attempt("pages", "alice", "guess", address="10.9.9.9").status_code == 200
        assert logged_in("pages", attempt("pages", "mallory", PASSWORD, address="10.9.9.9"))
    assert_locked_out("pages", attempt("pages", "alice", "guess", address="10.9.9.9"))


def test_a_token_login_clears_its_usernames_failures():
    UserFactory(username="alice")
    for _ in range(LIMIT - 1):
        attempt("token", "alice", "typo", address="10.4.4.4")
    assert logged_in("token", attempt("token", "alice", PASSWORD, address="10.4.4.5"))
    assert not AccessAttempt.objects.filter(username="alice").exists()
    # Four more typos later in the window do not lock alice out: the success cleared the first four.
    for _ in range(LIMIT - 1):
        assert attempt("token", "alice", "typo", address="10.4.4.4").status_code == 401
    assert logged_in("token", attempt("token", "alice", PASSWORD, address="10.4.4.5"))
