from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from marketing_agents.tests.processes import run_without_database


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test's own, so stopping it does not disturb the rest of the suite."""
    binary = os.environ.get("DEVSERVICES_REDIS_SERVER") or shutil.which("redis-server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield process, f"redis://127.0.0.1:{port}/0"
    if process.poll() is None:
        process.kill()
        process.wait()


def test_healthz_answers_without_touching_dependencies(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_200_then_503_when_redis_stops(client, settings, own_redis):
    process, url = own_redis
    settings.REDIS_URL = settings.CELERY_BROKER_URL = url
    layer = settings.CHANNEL_LAYERS["realtime"]
    hosts = [{**layer["CONFIG"]["hosts"][0], "address": url}]
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        "realtime": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": hosts}},
    }
    ready = client.get("/readyz")
    assert ready.status_code == 200
    everything_ok = {"database": "ok", "redis": "ok", "layer": "ok", "broker": "ok"}
    assert ready.json() == {"status": "ok", "checks": everything_ok}

    process.terminate()
    process.wait(10)
    down = client.get("/readyz")
    assert down.status_code == 503
    checks = {"database": "ok", "redis": "down", "layer": "down", "broker": "down"}
    assert down.json() == {"status": "unavailable", "checks": checks}


READYZ_SCRIPT = """
import django
django.setup()
from django.test import Client
response = Client().get("/readyz")
checks = response.json()["checks"]
print(response.status_code, checks["database"], checks["redis"], checks["layer"], checks["broker"])
"""


def test_readyz_is_503_when_the_database_is_unreachable():
    """A server whose database is down (nothing listens on port 1) reports it."""
    result = run_without_database(READYZ_SCRIPT)
    assert result.stdout.split() == ["503", "down", "ok", "ok", "ok"], result.stderr[-2000:]
