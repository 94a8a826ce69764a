"""`make run` under faults: its supervisor restarts a killed worker, rides out a Redis restart, and the
run in flight completes with nothing lost or doubled (PROTOCOL.md §9)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
import websockets
from channels.db import database_sync_to_async
from rest_framework_simplejwt.tokens import AccessToken

from campaigns.tests.factories import CampaignFactory, UserFactory
from eventlog.models import CampaignEvent
from marketing_agents.tests.processes import BASE_DIR, RedisServer, free_port, process_env
from marketing_agents.tests.test_fault_redis import next_event
from orchestration.models import Artifact, OrchestrationRun

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

db = database_sync_to_async


class MakeRun:
    """`python -m deploy.local run`, what `make run` runs once the venv exists."""

    def __init__(self, tmp_path, redis: RedisServer) -> None:
        self.port = free_port()
        self.log_path = tmp_path / "make-run.log"
        (tmp_path / "metrics").mkdir()
        env = process_env(
            REDIS_URL=redis.url,
            PORT=str(self.port),
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
            AGENT_CHUNK_DELAY_MS="40",
            RUN_REQUEUE_AFTER_SECONDS="3",
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "deploy.local", "run"],
                cwd=BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_for_log("serving on http://", 90)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.process.poll() is None, f"make run exited:\n{self.log()[-5000:]}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.log()[-5000:]}"
            time.sleep(0.1)

    def pid(self, child: str) -> int:
        pids = re.findall(rf"\] {child} (?:started|restarted) \(pid (\d+)", self.log())
        return int(pids[-1])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def make_run(tmp_path):
    redis = RedisServer(tmp_path).start()
    product = MakeRun(tmp_path, redis)
    yield product, redis
    product.stop()
    redis.stop()


async def until(ws, seen: list[dict], event: str, timeout: float) -> None:
    while not seen or seen[-1]["event"] != event:
        seen.append(await next_event(ws, timeout))


def stored_sequences(campaign) -> list[int]:
    return list(CampaignEvent.objects.filter(campaign=campaign).order_by("sequence").values_list("sequence", flat=True))


async def test_a_killed_worker_is_restarted_a_redis_restart_is_ridden_out_and_the_run_completes(make_run):
    product, redis = make_run
    loop = asyncio.get_running_loop()
    alice = await db(UserFactory)(username="alice")
    campaign = await db(CampaignFactory)(owner=alice)
    token = AccessToken.for_user(alice)
    ws = await websockets.connect(f"ws://127.0.0.1:{product.port}/ws/campaigns/?access_token={token}")
    await ws.send(json.dumps({"type": "subscribe", "campaign_id": campaign.public_id}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
    async with httpx.AsyncClient(base_url=product.url, headers={"Authorization": f"Bearer {token}"}) as api:
        started = await api.post(f"/api/campaigns/{campaign.public_id}/runs/", json={}, timeout=10)
    assert started.status_code == 202, started.text
    seen: list[dict] = []
    await until(ws, seen, "step.started", 30)

    # kill -9 of the worker and everything it forked, mid-step, as when its machine dies
    worker = product.pid("worker")
    os.killpg(worker, signal.SIGKILL)
    killed = time.monotonic()
    await loop.run_in_executor(None, lambda: product.wait_for_log("worker restarted", 30))
    print(f"\nworker killed: restarted after {time.monotonic() - killed:.2f} s", end=" ")
    assert f"worker (pid {worker}) exited with killed by SIGKILL" in product.log()

    # then Redis goes away and comes back empty while the run goes on
    await until(ws, seen, "artifact.generated", 60)
    print(f"its step taken over, next artifact {time.monotonic() - killed:.2f} s after the kill", end=" ")
    await loop.run_in_executor(None, lambda: redis.restart_after(down_for=1.0))

    await until(ws, seen, "campaign.completed", 90)
    await ws.close()
    sequences = [f["sequence"] for f in seen]
    assert sequences == list(range(1, len(sequences) + 1)) == await db(stored_sequences)(campaign)
    run = await db(OrchestrationRun.objects.get)(public_id=started.json()["id"])
    types = await db(lambda: sorted(Artifact.objects.filter(run=run).values_list("type", flat=True)))()
    assert run.state == "completed" and types == ["Copy", "ShortCopy", "Visual"], "no duplicate artifact"

    log = product.log()
    assert product.process.poll() is None, "make run kept serving"
    assert "crash-looping" not in log and "web restarted" not in log, log[-5000:]
    assert log.count("worker restarted") == 1, "only the killed worker was restarted"
    async with httpx.AsyncClient(base_url=product.url) as client:
        metrics = (await client.get("/metrics", timeout=10)).text
    assert 'supervisor_restarts_total{child="worker"} 1.0' in metrics
    assert product.stop() == 0, "Ctrl-C stops make run cleanly"
