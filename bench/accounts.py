"""Account-level benchmarks: webhook delivery throughput and spend batching under load, on a real
Celery worker, Redis and PostgreSQL private to the run, with a local receiver standing in for a
customer's endpoint.

    .venv/bin/python bench/accounts.py                                  # both; prints one JSON document
    .venv/bin/python bench/accounts.py webhooks --events 1000 --webhooks 1
    .venv/bin/python bench/accounts.py webhooks --events 1000 --webhooks 10
    .venv/bin/python bench/accounts.py spend --reports 4000 --threads 8

webhooks: one user, N webhooks on one campaign, E events published one transaction each; the time
from the first publish to the last delivery received, deliveries a second, and the worker's CPU per
delivery. spend: R usage reports from T threads (runs reporting at once) for one user; reports a
second, database transactions per report, and how many spend.updated events they made (one a
second at most, the last exact). Not part of `make test`: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

from deploy.local import services as devservices  # noqa: E402
from webhooks.tests.receiver import Receiver  # noqa: E402

PY = sys.executable


def django(env: dict[str, str], code: str) -> str:
    result = subprocess.run(
        [PY, "-c", "import django; django.setup()\n" + code], cwd=BASE, env=env, capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return result.stdout.strip()


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for each in [str(pid), *subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]:
        try:
            with open(f"/proc/{each}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except FileNotFoundError:
            pass
    return total


def transactions(env: dict[str, str]) -> int:
    return int(
        django(
            env,
            "from django.db import connection\nc = connection.cursor()\n"
            "c.execute('SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()')\n"
            "print(c.fetchone()[0])",
        )
    )


PUBLISH = """
from django.contrib.auth import get_user_model
from campaigns.services import campaign_create
from eventlog.publisher import publish
from webhooks.services import webhook_create
import time
user, _ = get_user_model().objects.get_or_create(username="bench")
campaign = campaign_create(owner=user, name="Webhook bench", brief="Benchmark")
for hook in range({webhooks}):
    webhook_create(user_id=user.pk, url=f"{url}?hook={{hook}}", events=["progress"])
started = time.time()
for i in range({events}):
    publish(campaign, "progress", {{"percentage": i % 100, "message": "bench"}})
print(started, time.time())
"""

SPEND = """
import threading, time
from decimal import Decimal
from django.contrib.auth import get_user_model
from django.db import connection
from accounts.services import spend_record
user, _ = get_user_model().objects.get_or_create(username="spender")
def report():
    try:
        for _ in range({per_thread}):
            spend_record(user_id=user.pk, cost=Decimal("0.001"))
    finally:
        connection.close()
threads = [threading.Thread(target=report) for _ in range({threads})]
started = time.time()
for thread in threads: thread.start()
for thread in threads: thread.join()
print(started, time.time(), user.pk)
"""

SPEND_STATE = """
from accounts.models import MonthlySpend
from eventlog.models import StreamEvent
row = MonthlySpend.objects.get(user_id={user})
updates = list(StreamEvent.objects.filter(stream__user_id={user}, event="spend.updated").order_by("sequence"))
gaps = [(b.emitted_at - a.emitted_at).total_seconds() for a, b in zip(updates, updates[1:])]
print(row.spend, row.announced_spend, len(updates), min(gaps) if gaps else -1, updates[-1].data["spend"])
"""


def webhooks(env: dict[str, str], worker_pid: int, events: int, hooks: int) -> dict:
    with Receiver() as receiver:
        cpu_before, xacts_before = cpu_seconds(worker_pid), transactions(env)
        started, published = map(
            float, django(env, PUBLISH.format(webhooks=hooks, url=receiver.url, events=events)).split()
        )
        expected = events * hooks
        deadline = time.monotonic() + 600
        while len(receiver.requests) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(receiver.requests)} of {expected} deliveries after 600 s")
            time.sleep(0.05)  # polling the receiver for the condition above, bounded by the deadline
        finished = time.time()
        cpu = cpu_seconds(worker_pid) - cpu_before
        xacts = transactions(env) - xacts_before
        per_hook: dict[str, list[int]] = {}
        for request in receiver.requests:
            per_hook.setdefault(request["path"], []).append(json.loads(request["body"])["sequence"])
    seconds = finished - started
    return {
        "webhooks": hooks,
        "events": events,
        "deliveries": expected,
        "publish_seconds": round(published - started, 2),
        "seconds_to_last_delivery": round(seconds, 2),
        "deliveries_per_second": round(expected / seconds, 1),
        "worker_cpu_ms_per_delivery": round(1000 * cpu / expected, 2),
        "db_transactions_per_delivery": round(xacts / expected, 2),
        "in_order_per_webhook": all(seq == sorted(seq) and len(seq) == events for seq in per_hook.values()),
    }


def spend(env: dict[str, str], reports: int, threads: int) -> dict:
    xacts_before = transactions(env)
    started, finished, user = django(env, SPEND.format(per_thread=reports // threads, threads=threads)).split()
    xacts = transactions(env) - xacts_before
    total = reports // threads * threads
    deadline = time.monotonic() + 60
    while True:
        spent, announced, updates, min_gap, last = django(env, SPEND_STATE.format(user=user)).split()
        if spent == announced or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling for the flush task's announcement, bounded by the deadline
    seconds = float(finished) - float(started)
    return {
        "reports": total,
        "threads": threads,
        "seconds": round(seconds, 2),
        "reports_per_second": round(total / seconds, 1),
        "db_transactions_per_report": round(xacts / total, 2),
        "spend_updated_events": int(updates),
        "min_seconds_between_updates": round(float(min_gap), 3),
        "final_spend": spent,
        "last_update_spend": last,
        "exact": spent == announced,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", default="all", choices=["all", "webhooks", "spend"])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--webhooks", type=int, default=1)
    parser.add_argument("--reports", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2, help="the worker's processes")
    args = parser.parse_args()
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    services = devservices.test_services()
    env = {
        **os.environ,
        **services.__enter__(),
        "DJANGO_SETTINGS_MODULE": "marketing_agents.settings",
        "LOG_LEVEL": "WARNING",
        "WEBHOOKS_ALLOW_PRIVATE": "1",
    }
    env["DATABASE_URL"] = env["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    worker = None
    try:
        subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=BASE, env=env, check=True)
        log = open(BASE / ".run" / "bench-worker.log", "w")
        worker = subprocess.Popen(
            devservices.worker_argv(
                "--concurrency", str(args.concurrency), "--beat", "--schedule", str(BASE / ".run" / "bench-beat")
            ),
            cwd=BASE,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        devservices.wait_for(
            lambda: " ready." in (BASE / ".run" / "bench-worker.log").read_text(), "worker", 60, worker
        )
        if args.scenario in ("webhooks", "all"):
            results["webhooks"] = webhooks(env, worker.pid, args.events, args.webhooks)
        if args.scenario == "all":
            results["webhooks_parallel"] = webhooks(env, worker.pid, args.events // 10, 10)
        if args.scenario in ("spend", "all"):
            results["spend"] = spend(env, args.reports, args.threads)
    finally:
        if worker is not None:
            devservices.stop([worker])
        services.__exit__(None, None, None)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
