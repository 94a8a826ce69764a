"""Fixtures shared by every app's tests: users (alice, bob, charlie the operator) and API clients."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from campaigns.tests.factories import UserFactory


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    """The REST rate limit and the realtime connection cap are off but where a test turns them on
    (accounts/tests/test_throttling.py, realtime/tests/test_connection_cap.py): many tests open
    more sockets as one user than the default cap allows."""
    settings.API_RATE_PER_MINUTE = 0
    settings.WS_MAX_CONNECTIONS_PER_USER = 0


@pytest.fixture(autouse=True)
def _close_executor_connections():
    """Async tests reach the database from asgiref's executor thread; its connection is closed after
    each test, so none is left open when pytest-django drops the test database (which it refuses)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(10)


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob")


@pytest.fixture
def operator(db):
    return UserFactory(username="charlie", is_staff=True, is_superuser=True)


@pytest.fixture
def operator_client(operator) -> Client:
    """An operator's browser: logged in to the admin and the staff pages."""
    client = Client()
    client.force_login(operator)
    return client


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


@pytest.fixture
def start_web(transactional_db, tmp_path):
    """Start real daphne processes (marketing_agents.serve) against the test database."""
    from marketing_agents.tests.processes import WebServer

    servers = []

    def start(**env):
        server = WebServer(tmp_path, **env).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def clock(monkeypatch):
    """The realtime rate limit's clock, moved by the test (``clock.advance(seconds)``) instead of slept through."""

    class Clock:
        now = 1_000.0

        def __call__(self) -> float:
            return self.now

        def advance(self, seconds: float) -> None:
            self.now += seconds

    fake = Clock()
    monkeypatch.setattr("realtime.consumers.base.clock", fake)
    return fake


@pytest.fixture
def broker_down(settings, tmp_path):
    """The broker is a real redis-server of the test's own, killed: a run-lifecycle write meets Redis down."""
    from marketing_agents.tests.processes import RedisServer

    server = RedisServer(tmp_path).start()
    settings.CELERY_BROKER_URL = server.url
    server.kill()
    yield
    server.stop()


@pytest.fixture
def start_worker(transactional_db, tmp_path):
    """Start real Celery workers against the test database; all are stopped after the test."""
    from marketing_agents.tests.processes import Worker

    workers = []

    def start(**env):
        worker = Worker(tmp_path, **env).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture(autouse=True)
def _stop_realtime_fanouts():
    """Each async test has its own event loop; stop the fan-out that lived on it."""
    yield
    from realtime import fanout

    for loop, instance in list(fanout._fanouts.items()):
        if loop.is_closed():
            fanout._fanouts.pop(loop, None)
        else:
            instance.cancel_tasks()
