"""Realtime benchmark: the real daphne (marketing_agents.serve), Redis and PostgreSQL, private to the run.

    .venv/bin/python bench/run.py                      # every scenario; prints one JSON document
    .venv/bin/python bench/run.py fanout --clients 1000 --campaigns 100 --rate 500 --duration 15
    .venv/bin/python bench/run.py idle --clients 10000
    .venv/bin/python bench/run.py snapshot
    .venv/bin/python bench/run.py resume
    .venv/bin/python bench/run.py headcheck            # the cost of the head check (stranded events)
    .venv/bin/python bench/run.py storm --clients 5000 --campaigns 100 --gap 20   # mass re-attach
    .venv/bin/python bench/run.py storm --web 2 --kill --clients 5000   # ... after kill -9 of their process
    .venv/bin/python bench/run.py idle --clients 5000 --profile .run/idle.txt   # where daphne's time goes
    .venv/bin/python bench/run.py fanout --transport sse   # the same, with server-sent event clients
    .venv/bin/python bench/run.py fanout --transport signalr-stateful   # SignalR clients, stateful reconnect

--profile samples the web process with py-spy for the whole scenario, writes the collapsed stacks
to the file and adds the functions that took the most of its CPU (inclusive and self) to the JSON.

With --pin (default on a 2-core machine) daphne and Redis run on CPU 0, the load client and the
publisher on CPU 1, as in ../shared/BASELINES.md. Not part of `make test`: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

from deploy.local import services as devservices  # noqa: E402

PY = sys.executable
TRANSPORT = ["ws"]  # --transport: the load client's connections, WebSockets or server-sent events


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None and shutil.which("taskset") else argv


def django(env: dict[str, str], code: str) -> str:
    result = subprocess.run(
        [PY, "-c", "import django; django.setup()\n" + code],
        cwd=BASE,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


SETUP = """
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken
from campaigns.services import campaign_create
user, _ = get_user_model().objects.get_or_create(username="bench")
ids = [campaign_create(owner=user, name=f"Bench {{i}}", brief="Benchmark campaign").public_id for i in range({m})]
token = AccessToken.for_user(user)
token.set_exp(lifetime=__import__("datetime").timedelta(hours=6))
print(str(token) + " " + ",".join(ids))
"""


class Stack:
    def __init__(self, pin: bool, web: int = 1) -> None:
        self.pin = pin
        self.web = web  # web processes; the load client spreads its connections over them
        self.services = devservices.test_services()

    def __enter__(self) -> Stack:
        self.env = {
            **os.environ,
            **self.services.__enter__(),
            "DJANGO_SETTINGS_MODULE": "marketing_agents.settings",
            "LOG_LEVEL": "WARNING",
            "CHANNEL_LAYER_CAPACITY": "10000",
            # One user ("bench") opens every connection: the per-user cap would refuse all but 100.
            "WS_MAX_CONNECTIONS_PER_USER": os.environ.get("WS_MAX_CONNECTIONS_PER_USER", "0"),
        }
        self.env["DATABASE_URL"] = self.env["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
        subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=BASE, env=self.env, check=True)
        self.daphnes, self.ports = [], []
        for index in range(self.web):
            port = devservices.free_port()
            log = open(BASE / ".run" / f"bench-daphne-{index}.log", "w")
            argv = [PY, "-m", "marketing_agents.serve", "-b", "127.0.0.1", "-p", str(port), "--access-log", "/dev/null"]
            daphne = subprocess.Popen(
                pinned(0 if self.pin else None, argv), cwd=BASE, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
            devservices.wait_for(lambda port=port: devservices.port_open(port), "daphne", process=daphne)
            self.daphnes.append(daphne)
            self.ports.append(port)
        self.daphne, self.port = self.daphnes[0], self.ports[0]
        return self

    def __exit__(self, *exc: object) -> None:
        devservices.stop(self.daphnes)
        self.services.__exit__(*exc)

    def campaigns(self, count: int) -> tuple[str, list[str]]:
        token, ids = django(self.env, SETUP.format(m=count)).split()
        return token, ids.split(",")

    def rss_kib(self) -> int:
        pid = self.daphne.pid
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        target = children[0] if children and self.pin else str(pid)  # taskset execs, so pid is daphne
        with open(f"/proc/{target}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    def cpu_seconds(self) -> float:
        """User and system CPU of every web process, added up."""
        total = 0.0
        for daphne in self.daphnes:
            if daphne.poll() is not None:
                continue  # killed by the storm scenario
            with open(f"/proc/{daphne.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total


class Client:
    def __init__(self, stack: Stack, token: str, campaigns: list[str], clients: int, ports: list[int] | None = None):
        url = ",".join(f"ws://127.0.0.1:{port}/ws/campaigns/?access_token={token}" for port in ports or stack.ports)
        self.process = subprocess.Popen(
            pinned(
                1 if stack.pin else None,
                [
                    PY,
                    str(BASE / "bench" / "client.py"),
                    "--url",
                    url,
                    "--campaigns",
                    ",".join(campaigns),
                    "--clients",
                    str(clients),
                    "--transport",
                    TRANSPORT[0],
                ],
            ),
            cwd=BASE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = self.expect("READY")

    def expect(self, word: str) -> dict:
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"client ended before {word}")
            if line.startswith(word + " "):
                return json.loads(line[len(word) + 1 :])

    def ask(self, command: str, word: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.expect(word)

    def close(self) -> None:
        try:
            self.process.stdin.write("EXIT\n")
            self.process.stdin.flush()
            self.process.wait(30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.process.kill()


def publish(stack: Stack, campaigns: list[str], rate: float, duration: float) -> dict:
    result = subprocess.run(
        pinned(
            1 if stack.pin else None,
            [
                PY,
                str(BASE / "bench" / "publisher.py"),
                "--campaigns",
                ",".join(campaigns),
                "--rate",
                str(rate),
                "--duration",
                str(duration),
            ],
        ),
        cwd=BASE,
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def delivery_buckets(stack: Stack) -> dict[float, float]:
    """realtime_event_delivery_seconds (emitted_at -> written to the sockets), cumulative buckets from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/metrics", timeout=10).read().decode()
    buckets = {}
    for line in text.splitlines():
        if line.startswith("realtime_event_delivery_seconds_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def server_latency(before: dict[float, float], after: dict[float, float]) -> dict:
    """Quantiles (as the upper bounds of their buckets) of the events delivered between two readings."""
    buckets = sorted((bound, count - before.get(bound, 0.0)) for bound, count in after.items())
    total = buckets[-1][1] if buckets else 0
    out = {}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        out[name] = next((round(b * 1000, 1) for b, count in buckets if total and count >= q * total), None)
    return {"upper_bucket_bounds": out, "events": int(total)}


def fanout(stack: Stack, clients: int, campaigns: int, rate: float, duration: float) -> dict:
    token, ids = stack.campaigns(campaigns)
    client = Client(stack, token, ids, clients)
    buckets_before = delivery_buckets(stack)
    cpu_before, commands_before = stack.cpu_seconds(), redis_commands(stack)
    summary = publish(stack, ids, rate, duration)
    result = client.ask("DRAIN " + json.dumps({"window": summary["window"], "counts": summary["counts"]}), "RESULT")
    cpu = stack.cpu_seconds() - cpu_before
    commands = redis_commands(stack) - commands_before
    client.close()
    result["server_side_delivery_ms"] = server_latency(buckets_before, delivery_buckets(stack))
    return {
        "clients": clients,
        "campaigns": campaigns,
        "events_per_second_offered": rate,
        "frames_per_second_offered": rate * clients / campaigns,
        "publisher": {k: summary[k] for k in ("sent", "rate_achieved", "late")},
        **result,
        "web_processes": stack.web,
        "server_cpu_us_per_frame": round(cpu * 1e6 / max(result["frames_received"], 1), 1),
        "redis_commands_per_event": round(commands / max(summary["sent"], 1), 2),
    }


def idle(stack: Stack, clients: int) -> dict:
    token, ids = stack.campaigns(10)
    warm = Client(stack, token, ids, 1)
    before = stack.rss_kib()
    client = Client(stack, token, ids, clients)
    time.sleep(2)
    after = stack.rss_kib()
    client.close()
    warm.close()
    return {
        "idle_connections": clients,
        "connect_seconds": client.ready["seconds"],
        "server_rss_kib_before": before,
        "server_rss_kib_after": after,
        "kib_per_connection": round((after - before) / clients, 1),
    }


def database_transactions(stack: Stack) -> int:
    """Transactions committed or rolled back in the bench's database (each autocommit query is one)."""
    import psycopg

    with psycopg.connect(stack.env["DATABASE_URL"].replace("postgres://", "postgresql://", 1)) as db:
        row = db.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0])


def redis_commands(stack: Stack) -> int:
    import redis

    return int(redis.Redis.from_url(stack.env["REDIS_URL"]).info("stats")["total_commands_processed"])


def storm(stack: Stack, clients: int, campaigns: int, gap: int, kill: bool) -> dict:
    """A web process died: all of its clients come back at once, each with its last sequence, after
    ``gap`` events per campaign were published meanwhile. With ``kill`` (and --web 2 or more) they are
    all on the first web process, which is killed (SIGKILL), and come back to the others; without,
    they close their sockets and come back to the same process(es)."""
    token, ids = stack.campaigns(campaigns)
    if kill:
        if stack.web < 2:
            raise SystemExit("storm --kill needs --web 2 or more: the clients come back to the others")
        client = Client(stack, token, ids, clients, ports=stack.ports[:1])
        stack.daphnes[0].kill()
        stack.daphnes[0].wait()
        client.ask("GONE", "GONE")
        survivors = ",".join(f"ws://127.0.0.1:{port}/ws/campaigns/?access_token={token}" for port in stack.ports[1:])
    else:
        client = Client(stack, token, ids, clients)
        client.ask("DROP", "DROPPED")
        survivors = ""
    publish(stack, ids, 2000, gap * campaigns / 2000)  # round-robin: exactly ``gap`` per campaign
    time.sleep(2)  # PostgreSQL flushes its statistics within a second of a transaction: let it settle
    xacts, commands, cpu = database_transactions(stack), redis_commands(stack), stack.cpu_seconds()
    result = client.ask(f"REATTACH {gap} {survivors}".rstrip(), "REATTACHED")
    cpu = stack.cpu_seconds() - cpu
    time.sleep(2)  # as above, before reading the statistics again
    xacts, commands = database_transactions(stack) - xacts, redis_commands(stack) - commands
    client.close()
    return {
        **result,
        "campaigns": campaigns,
        "web_processes_taking_them": stack.web - 1 if kill else stack.web,
        "server_cpu_ms_per_reattach": round(cpu * 1000 / clients, 2),
        "database_transactions_per_reattach": round(xacts / clients, 2),
        "redis_commands_per_reattach": round(commands / clients, 2),
    }


def snapshot(stack: Stack, requests: int) -> dict:
    token, ids = stack.campaigns(1)
    publish(stack, ids, 200, 1)
    client = Client(stack, token, ids, 1)
    result = client.ask(f"SNAPSHOT {requests}", "SNAPSHOTS")
    client.close()
    return {"snapshot_requests": requests, "snapshot_latency_ms": result}


RESUME = """
import asyncio, json, sys, time
from websockets.asyncio.client import connect
async def main(url, campaign, gap):
    ws = await connect(url); await ws.send(json.dumps({"type": "subscribe", "campaign_id": campaign}))
    last = json.loads(await ws.recv())["last_sequence"]; await ws.close()
    print("GONE", last, flush=True); sys.stdin.readline()
    started = time.perf_counter()
    ws = await connect(url); await ws.send(json.dumps({"type": "subscribe", "campaign_id": campaign,
                                                        "last_sequence": last}))
    got = 0
    while got < gap:
        frame = json.loads(await ws.recv())
        if frame.get("type") == "event":
            got += 1
    print("CAUGHT_UP", time.perf_counter() - started, flush=True)
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def resume(stack: Stack, gap: int, trials: int) -> dict:
    token, ids = stack.campaigns(1)
    url = f"ws://127.0.0.1:{stack.port}/ws/campaigns/?access_token={token}"
    times = []
    for _ in range(trials):
        proc = subprocess.Popen(
            [PY, "-c", RESUME, url, ids[0], str(gap)],
            cwd=BASE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().startswith("GONE")
        publish(stack, ids, 2000, gap / 2000)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        times.append(float(proc.stdout.readline().split()[1]))
        proc.wait(30)
    times.sort()
    return {
        "resume_gap_events": gap,
        "trials": trials,
        "resume_to_caught_up_ms": {"p50": round(times[len(times) // 2] * 1000, 1), "max": round(times[-1] * 1000, 1)},
    }


HEADS = """
import time
from campaigns.models import Campaign
from eventlog.reads import campaign_log, read_heads
from django.db import connection
logs = [campaign_log(c) for c in Campaign.objects.order_by("pk")[:{n}]]
read_heads(logs)
started = time.perf_counter()
for _ in range(50):
    read_heads(logs)
print((time.perf_counter() - started) / 50)
"""


def headcheck(stack: Stack, campaigns: int, seconds: float) -> dict:
    """What the head check (PROTOCOL.md §9) costs: the query for every subscribed campaign of a
    process, and the web process's idle CPU with that many campaigns subscribed."""
    token, ids = stack.campaigns(campaigns)
    query_seconds = float(django(stack.env, HEADS.format(n=campaigns)))
    client = Client(stack, token, ids, campaigns)  # one client per campaign: the most campaigns per process
    checks_before = metric(stack, "realtime_head_checks_total")
    cpu_before = stack.cpu_seconds()
    time.sleep(seconds)  # the measurement window: idle on purpose
    cpu = stack.cpu_seconds() - cpu_before
    checks = metric(stack, "realtime_head_checks_total") - checks_before
    client.close()
    return {
        "subscribed_campaigns": campaigns,
        "query_ms": round(query_seconds * 1000, 2),
        "checks_in_window": checks,
        "window_seconds": seconds,
        "idle_server_cpu_percent_of_a_core": round(cpu / seconds * 100, 2),
    }


def metric(stack: Stack, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/metrics") as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


class Profile:
    """py-spy sampling the web process (every thread, idle frames left out) while a scenario runs."""

    def __init__(self, stack: Stack, path: str | None) -> None:
        self.stack, self.path, self.process = stack, path, None

    def __enter__(self) -> Profile:
        if self.path:
            spy = shutil.which("py-spy", path=str(Path(PY).parent)) or "py-spy"
            argv = [spy, "record", "--pid", str(self.stack.daphne.pid), "--rate", "250", "--format", "raw"]
            self.process = subprocess.Popen([*argv, "--output", self.path], stdout=subprocess.DEVNULL)
            time.sleep(1)  # py-spy attaching; a sample window, not a wait for a condition
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
            self.process.wait(60)

    def summary(self, top: int = 25) -> dict:
        """The functions with the largest share of the samples, inclusive and self."""
        if not self.path:
            return {}
        inclusive: dict[str, int] = {}
        own: dict[str, int] = {}
        total = 0
        for line in Path(self.path).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            samples = int(count)
            total += samples
            frames = [frame_name(frame) for frame in stack.split(";")[1:]]
            for name in set(frames):
                inclusive[name] = inclusive.get(name, 0) + samples
            if frames:
                own[frames[-1]] = own.get(frames[-1], 0) + samples

        def share(table: dict[str, int]) -> list[str]:
            ranked = sorted(table.items(), key=lambda item: -item[1])[:top]
            return [f"{100 * count / total:5.1f}%  {name}" for name, count in ranked]

        return {"samples": total, "inclusive": share(inclusive), "self": share(own)}


def frame_name(frame: str) -> str:
    """'handshake (realtime/consumers/base.py:88)' -> 'handshake (realtime/consumers/base.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for prefix in (str(BASE) + "/", "site-packages/"):
        where = where.split(prefix, 1)[-1]
    return f"{name} ({where})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "scenario",
        nargs="?",
        default="all",
        choices=["all", "fanout", "idle", "snapshot", "resume", "headcheck", "storm"],
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--gap", type=int, default=20, help="storm: events each client missed")
    parser.add_argument("--kill", action="store_true", help="storm: kill -9 the clients' web process (needs --web 2)")
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--web", type=int, default=1, help="web processes (connections spread over them)")
    parser.add_argument("--profile", metavar="FILE", help="sample the web process with py-spy into FILE")
    parser.add_argument(
        "--transport",
        choices=["ws", "sse", "signalr", "signalr-stateful"],
        default="ws",
        help="clients on WebSockets, server-sent events, the SignalR hub, or the hub with stateful reconnect",
    )
    args = parser.parse_args()
    TRANSPORT[0] = args.transport
    results: dict = {
        "pinned": args.pin,
        "transport": args.transport,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with Stack(args.pin, args.web) as stack, Profile(stack, args.profile) as profile:
        if args.scenario in ("fanout", "all"):
            results["fanout"] = fanout(stack, args.clients, args.campaigns, args.rate, args.duration)
        if args.scenario == "all":
            results["saturation"] = fanout(stack, 1000, 10, 500, args.duration)
        if args.scenario in ("snapshot", "all"):
            results["snapshot"] = snapshot(stack, 500)
        if args.scenario in ("resume", "all"):
            results["resume"] = resume(stack, 100, 10)
        if args.scenario in ("headcheck", "all"):
            results["headcheck"] = headcheck(stack, 1000, 15)
        if args.scenario == "storm":
            results["storm"] = storm(stack, args.clients, args.campaigns, args.gap, args.kill)
        if args.scenario in ("idle", "all"):
            results["idle"] = idle(stack, args.clients if args.scenario == "idle" else 10000)
    if args.profile:
        results["profile"] = profile.summary()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
