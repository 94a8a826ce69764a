"""The REST rate limit (accounts/throttling.py): per user, per API key, staff apart; 429 with
Retry-After and a readable detail; one count across every web process; Redis away lets requests
through."""

from __future__ import annotations

import time

import httpx
import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from accounts import services as account_services
from campaigns.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/campaigns/"
NOW = 1_800_000_030.0  # 30 s into a minute


@pytest.fixture
def frozen(monkeypatch):
    """The throttle's clock, held still (a real minute could roll over mid-test)."""
    monkeypatch.setattr("accounts.throttling.time.time", lambda: NOW)


def client_for(user=None, *, key: str | None = None) -> APIClient:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    else:
        client.force_authenticate(user)
    return client


def test_a_user_over_the_limit_gets_429_with_retry_after_and_others_do_not(settings, frozen):
    settings.API_RATE_PER_MINUTE = 5
    alice, bob = UserFactory(), UserFactory()
    as_alice = client_for(alice)
    assert [as_alice.get(URL).status_code for _ in range(5)] == [200] * 5

    refused = as_alice.get(URL)

    assert refused.status_code == 429
    assert refused["Retry-After"] == "30"
    assert refused.json() == {"detail": "Request was throttled. Expected available in 30 seconds."}
    assert client_for(bob).get(URL).status_code == 200, "each user has a budget of their own"


def test_api_keys_count_against_their_owners_budget(settings, frozen):
    """Keys do not multiply the budget: a user with three keys has one budget."""
    settings.API_RATE_PER_MINUTE = 3
    alice = UserFactory()
    keys = [account_services.api_key_create(user_id=alice.pk, name=name)[1] for name in ("one", "two", "three")]
    assert [client_for(key=key).get(URL).status_code for key in keys] == [200, 200, 200]
    assert client_for(key=keys[0]).get(URL).status_code == 429
    assert client_for(alice).get(URL).status_code == 429


def test_staff_are_not_limited_unless_told(settings, frozen):
    settings.API_RATE_PER_MINUTE = 1
    operator = UserFactory(is_staff=True)
    as_operator = client_for(operator)
    assert [as_operator.get(URL).status_code for _ in range(5)] == [200] * 5
    settings.API_STAFF_RATE_PER_MINUTE = 2  # counted from here on
    assert [as_operator.get(URL).status_code for _ in range(3)] == [200, 200, 429]


def test_a_new_minute_is_a_new_budget(settings, monkeypatch):
    settings.API_RATE_PER_MINUTE = 1
    clock = [NOW]
    monkeypatch.setattr("accounts.throttling.time.time", lambda: clock[0])
    as_alice = client_for(UserFactory())
    assert [as_alice.get(URL).status_code for _ in range(2)] == [200, 429]
    clock[0] = NOW + 30  # the next minute
    assert as_alice.get(URL).status_code == 200


def test_with_redis_away_requests_go_through_without_waiting_on_it(settings, monkeypatch):
    from accounts import throttling

    settings.API_RATE_PER_MINUTE = 1
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: a refused connection
    monkeypatch.setattr(throttling, "_paused_until", 0.0)
    as_alice = client_for(UserFactory())
    started = time.monotonic()
    assert [as_alice.get(URL).status_code for _ in range(3)] == [200] * 3
    print(f"three requests with Redis away: {time.monotonic() - started:.2f} s")
    assert throttling._paused_until > time.time(), "Redis is left alone for a while after it failed"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_one_count_across_two_web_processes(start_web):
    servers = [start_web(API_RATE_PER_MINUTE="4"), start_web(API_RATE_PER_MINUTE="4")]
    alice = UserFactory()
    headers = {"Authorization": f"Bearer {AccessToken.for_user(alice)}"}
    while time.time() % 60 > 45:  # a minute's window must not end mid-test: wait for the next one
        time.sleep(0.2)  # polling the clock, bounded by the minute
    statuses = [
        httpx.get(f"{servers[number % 2].url}{URL}", headers=headers, timeout=30).status_code for number in range(6)
    ]
    assert statuses == [200, 200, 200, 200, 429, 429], statuses
    refused = httpx.get(f"{servers[0].url}{URL}", headers=headers, timeout=30)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
