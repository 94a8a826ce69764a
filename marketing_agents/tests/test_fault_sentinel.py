"""Redis with Sentinel (issue 13): REDIS_URL names a Sentinel set; the primary is killed mid-run,
the Sentinels promote the replica, and the product follows it: real daphne, a real Celery worker, a
real primary, replica and three Sentinels of the test's own."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import pytest
from channels.db import database_sync_to_async

from marketing_agents.tests.processes import RedisServer, SentinelServer, until
from marketing_agents.tests.test_fault_redis import a_watched_run, assert_completed_once, next_event

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

db = database_sync_to_async


def answers(check) -> bool:
    try:
        return check()
    except Exception:  # a server still starting, or the one just killed
        return False


@pytest.fixture(params=["open", "passwords"])
def sentinel_set(request, tmp_path):
    """A primary, its replica (in sync) and three Sentinels that all see both; with ``passwords``,
    the data nodes require one and the Sentinels another."""
    data_pw, sentinel_pw = ("d@ta:pw/1", "watch3r") if request.param == "passwords" else (None, None)
    started = []

    def start(server):
        started.append(server)
        return server.start()

    try:
        primary = start(RedisServer(tmp_path, password=data_pw))
        replica = start(RedisServer(tmp_path, replica_of=primary.port, password=data_pw))
        until(lambda: replica.info("replication").get("master_link_status") == "up", "replica in sync", 30)
        sentinels = [
            start(SentinelServer(tmp_path, primary.port, auth_pass=data_pw, password=sentinel_pw)) for _ in range(3)
        ]

        def all_see_everyone() -> bool:
            masters = [sentinel.info("sentinel")["master0"] for sentinel in sentinels]
            return all(master["slaves"] == 1 and master["sentinels"] == 3 for master in masters)

        until(lambda: answers(all_see_everyone), "Sentinels that see the replica and each other", 30)
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in sentinels)
        auth = f":{quote(data_pw, safe='')}@" if data_pw else ""
        query = f"?sentinel_password={quote(sentinel_pw, safe='')}" if sentinel_pw else ""
        url = f"redis+sentinel://{auth}{hosts}/mymaster/0{query}"
        yield SimpleNamespace(primary=primary, replica=replica, sentinels=sentinels, url=url)
    finally:  # also when the set never came up: no server outlives the test
        for server in reversed(started):
            server.stop()


async def test_the_primary_killed_mid_run_the_replica_takes_over_and_the_run_completes(
    start_web, start_worker, sentinel_set
):
    server = start_web(REDIS_URL=sentinel_set.url)
    # A step takes a few seconds (80 chunks, 40 ms apart), so the primary dies while a task runs.
    worker = start_worker(REDIS_URL=sentinel_set.url, AGENT_CHUNK_DELAY_MS="40", RUN_REQUEUE_AFTER_SECONDS="3")
    ws, campaign, run_id, seen = await a_watched_run(server)

    sentinel_set.primary.kill()  # kill -9 of the primary, mid-step
    killed = time.monotonic()
    promoted = await asyncio.get_running_loop().run_in_executor(
        None,
        lambda: until(
            lambda: answers(lambda: sentinel_set.sentinels[0].primary_port() == sentinel_set.replica.port),
            "promotion of the replica",
            60,
        ),
    )
    print(f"\nthe Sentinels promoted the replica {promoted:.2f} s after the primary was killed", end=" ")
    while seen[-1]["event"] != "campaign.completed":
        seen.append(await next_event(ws, 120))
    print(f"run completed {time.monotonic() - killed:.2f} s after the kill", end=" ")
    await ws.close()

    await assert_completed_once(seen, campaign, run_id, worker)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
        ready = await api.get("/readyz")
    assert ready.status_code == 200, ready.text  # the web process's checks reach the new primary
    assert server.process.poll() is None
