"""Fixtures shared by every app's tests: users (alice, bob, charlie the operator) and API clients."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from campaigns.tests.factories import UserFactory


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob")


@pytest.fixture
def operator(db):
    return UserFactory(username="charlie", is_staff=True, is_superuser=True)


def _client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def anon_api() -> APIClient:
    return APIClient()


@pytest.fixture
def alice_api(alice) -> APIClient:
    return _client_for(alice)


@pytest.fixture
def bob_api(bob) -> APIClient:
    return _client_for(bob)


@pytest.fixture
def operator_api(operator) -> APIClient:
    return _client_for(operator)
