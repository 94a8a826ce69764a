"""The production layout (deploy/) on several hosts, for real: network namespaces made by the test,
each a host with its own address, run as docs/DEPLOY.md says.

    data   10.213.N.2    PostgreSQL and Redis
    lb     10.213.N.5    HAProxy with deploy/haproxy/haproxy.cfg
    web1   10.213.N.11   honcho start web          (deploy/Procfile)
    web2   10.213.N.12   honcho start web
    work   10.213.N.21   honcho start worker beat  (two workers, the one beat)
    the test process     10.213.N.254: the clients' machine

Clients reach the product only through the balancer: native WebSocket and server-sent event clients
written as a frontend would (reconnect, resume with the last sequence or Last-Event-ID) and the real
``@microsoft/signalr`` client (realtime/tests/js_signalr, scenario ``failover`` with the balancer as
its one server).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import httpx
import psycopg
import pytest
import websockets

from campaigns.tests.factories import PASSWORD
from deploy.local import services
from deploy.tests.netns import Host, Sandbox, why_namespaces_cannot_be_made
from marketing_agents.tests.processes import E2E_ENV, until
from realtime.tests.test_signalr_client import (  # noqa: F401
    NodeClient,
    _node_and_the_signalr_client,
    assert_resumed_statefully,
    events_in,
)

BASE_DIR = Path(__file__).resolve().parents[2]
PROCFILE = BASE_DIR / "deploy" / "Procfile"
HAPROXY_CFG = BASE_DIR / "deploy" / "haproxy" / "haproxy.cfg"
VENV_BIN = Path(sys.executable).parent
WEB_PORT = 8000
TERMINAL = {"campaign.completed", "generation.failed", "run.cancelled"}
TIMEOUT = 60  # seconds: the bound of every wait for one condition

CANNOT = why_namespaces_cannot_be_made()
if CANNOT:
    warnings.warn(f"THE MULTI-HOST TESTS DID NOT RUN: {CANNOT}", stacklevel=1)
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(CANNOT), reason=f"THE MULTI-HOST TESTS DID NOT RUN: {CANNOT}"),
    pytest.mark.timeout(600),
]


def host_env(**extra: str) -> dict[str, str]:
    """A host's own environment: nothing of the test suite's (its database, its Redis) leaks in."""
    return {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8", **extra}


def honcho(*args: str, env_file: Path) -> list[str]:
    return [sys.executable, "-m", "honcho", "-d", str(BASE_DIR), "-f", str(PROCFILE), "-e", str(env_file), *args]


@dataclass
class Cluster:
    sandbox: Sandbox
    data: Host
    lb: Host
    webs: list[Host]
    work: Host
    root: Path
    env_file: Path
    haproxy_socket: Path
    haproxy: subprocess.Popen | None = None
    redis: subprocess.Popen | None = None
    honchos: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.lb.address}"

    def log(self, host: Host) -> Path:
        return self.root / f"{host.name}.log"

    def start_roles(self, host: Host, *args: str) -> None:
        env = host_env(PROMETHEUS_MULTIPROC_DIR=str(self.root / f"metrics-{host.name}"))
        shutil.rmtree(env["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)  # as DEPLOY.md says: empty at start
        Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir()
        self.honchos[host.name] = host.popen(
            honcho(*args, env_file=self.env_file), log=self.log(host), env=env, cwd=BASE_DIR
        )

    def start_web(self, host: Host) -> None:
        self.start_roles(host, "start", "-p", str(WEB_PORT), "web")

    def stop_gracefully(self, host: Host) -> None:
        """SIGTERM to the host's honcho, which passes it on (serve closes its sockets with 1001)."""
        process = self.honchos[host.name]
        process.send_signal(signal.SIGTERM)
        process.wait(TIMEOUT)
        del self.honchos[host.name]

    def serving(self, host: Host) -> bool:
        """The host's web process answers, asked directly (not through the balancer)."""
        request = urllib.request.Request(f"http://{host.address}:{WEB_PORT}/healthz", headers={"Host": self.lb.address})
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def restart_redis(self, down_for: float) -> None:
        """kill -9 of the data host's Redis; down ``down_for`` seconds; started again, empty."""
        self.redis.kill()
        self.redis.wait(10)
        time.sleep(down_for)  # the outage itself: how long the fault lasts, not a wait for a condition
        self.redis = start_redis(self.data, self.root)

    def admin(self, command: str) -> str:
        """A command to HAProxy's runtime API (the stats socket in haproxy.cfg)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.haproxy_socket))
            sock.sendall(command.encode() + b"\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer.decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """The balancer's view of each web process: status (UP, DOWN, DRAIN...), current sessions."""
        lines = self.admin("show stat").lstrip("# ").splitlines()
        header = lines[0].split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {row["svname"]: row for row in rows if row["pxname"] == "web" and row["svname"].startswith("web")}

    def status(self, name: str) -> str:
        try:
            return self.servers()[name]["status"]
        except OSError:
            return "unknown"

    def wait_up(self, *names: str) -> None:
        what = f"{', '.join(names)} UP in the balancer"
        until(lambda: all(self.status(name) == "UP" for name in names), what, TIMEOUT)

    def all_up(self) -> None:
        """Every host back in service, whatever the previous test did to them."""
        for index, host in enumerate(self.webs, start=1):
            process = self.honchos.get(host.name)
            if process is None or process.poll() is not None:
                host.power_on()
                self.start_web(host)
            self.admin(f"set server web/web{index} state ready")
        self.wait_up(*(f"web{index}" for index in range(1, len(self.webs) + 1)))


def start_postgres(host: Host, root: Path) -> None:
    """A PostgreSQL of the data host's own, listening on its address, trusting the sandbox's subnet."""
    bin_dir = services.postgres_bin_dir()
    data_dir = root / "pgdata"
    data_dir.mkdir()
    runner = services.as_postgres_user()
    if runner:
        root.chmod(0o755)
        shutil.chown(data_dir, "postgres")
    initdb = [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "--no-sync"]
    subprocess.run([*runner, *initdb], check=True, capture_output=True, timeout=120)
    settings = {
        "port": "5432",
        "listen_addresses": f"'{host.address}'",
        "unix_socket_directories": f"'{data_dir}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "max_connections": "200",
    }
    with (data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
    with (data_dir / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {host.sandbox.subnet}.0/24 trust\n")
    host.popen([*runner, str(bin_dir / "postgres"), "-D", str(data_dir)], log=root / "postgres.log", env=host_env())
    until(lambda: services.port_open(5432, host.address), "PostgreSQL on the data host", TIMEOUT)
    with psycopg.connect(f"postgresql://postgres@{host.address}:5432/postgres", autocommit=True) as db:
        db.execute("CREATE DATABASE marketing_agents")


def start_redis(host: Host, root: Path) -> subprocess.Popen:
    argv = [services.redis_server_binary(), "--bind", host.address, "--port", "6379", "--protected-mode", "no"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(root)]
    process = host.popen(argv, log=root / "redis.log", env=host_env())
    until(lambda: services.port_open(6379, host.address), "Redis on the data host", TIMEOUT)
    return process


def write_env_file(path: Path, data: Host, lb: Host) -> None:
    """deploy/env.example filled in for the sandbox, with the suite's quick settings for runs."""
    shared = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": f"postgres://postgres@{data.address}:5432/marketing_agents",
        "REDIS_URL": f"redis://{data.address}:6379/0",
        "ALLOWED_HOSTS": lb.address,
        "WORKER_CONCURRENCY": "1",
        "BEAT_SCHEDULE": str(path.parent / "celerybeat-schedule"),
        **E2E_ENV,
        # A run lasts long enough (about 20 s) for a host to die or every web process to restart in it.
        "AGENT_CHUNK_DELAY_MS": "400",
    }
    path.write_text("".join(f"{key}={value}\n" for key, value in shared.items()))
    path.chmod(0o600)


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="marketing-agents-hosts-"))  # PostgreSQL's user must reach it
    sandbox = Sandbox()
    try:
        data, lb = sandbox.host("data", 2), sandbox.host("lb", 5)
        webs = [sandbox.host("web1", 11), sandbox.host("web2", 12)]
        work = sandbox.host("work", 21)
        cluster = Cluster(sandbox, data, lb, webs, work, root, root / "marketing-agents.env", root / "haproxy.sock")
        start_postgres(data, root)
        cluster.redis = start_redis(data, root)
        write_env_file(cluster.env_file, data, lb)
        # Once per release, from any host, before the web processes start (docs/DEPLOY.md).
        alice = "from campaigns.tests.factories import UserFactory; UserFactory(username='alice')"
        for command in (["manage.py", "migrate", "--noinput"], ["manage.py", "shell", "-c", alice]):
            argv = honcho("run", "python", *command, env_file=cluster.env_file)
            done = webs[0].run(argv, env=host_env(), cwd=BASE_DIR)
            assert done.returncode == 0, done.stdout + done.stderr
        for host in webs:
            cluster.start_web(host)
        cluster.start_roles(work, "start", "-c", "worker=2", "worker", "beat")
        haproxy_env = {
            "WEB1": f"{webs[0].address}:{WEB_PORT}",
            "WEB2": f"{webs[1].address}:{WEB_PORT}",
            "PUBLIC_HOST": lb.address,
            "HAPROXY_SOCKET": str(cluster.haproxy_socket),
        }
        argv = [shutil.which("haproxy") or "haproxy", "-W", "-db", "-f", str(HAPROXY_CFG)]
        cluster.haproxy = lb.popen(argv, log=cluster.log(lb), env=haproxy_env)
        until(cluster.haproxy_socket.exists, "HAProxy's runtime socket", TIMEOUT)
        cluster.wait_up("web1", "web2")
        until(lambda: cluster.log(work).read_text().count(" ready.") >= 2, "two workers ready", TIMEOUT)
    except BaseException:
        print(logs(root))
        sandbox.close()
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield cluster
    finally:
        sandbox.close()
        shutil.rmtree(root, ignore_errors=True)


def logs(root: Path) -> str:
    return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}" for path in root.glob("*.log"))


@contextlib.contextmanager
def logs_on_failure(cluster: Cluster):
    """Every host's log, last lines first, when the test fails."""
    try:
        yield
    except BaseException:
        print(logs(cluster.root))
        raise


class Watcher:
    """A native WebSocket client written as a frontend would: on any disconnect it reconnects through
    the balancer and resumes with the last sequence it received, until the run ends."""

    def __init__(self, url: str, token: str, campaign_id: str) -> None:
        self.url = f"{url.replace('http', 'ws', 1)}/ws/campaigns/?access_token={token}"
        self.campaign_id = campaign_id
        self.events: list[dict] = []
        self.closes: list[int | None] = []
        self.refused = 0
        self.subscribed_at: list[float] = []  # time.monotonic() of each subscription
        self.connected = asyncio.Event()
        self.task = asyncio.ensure_future(self.follow())

    @property
    def last(self) -> int:
        return self.events[-1]["sequence"] if self.events else 0

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1]["event"] in TERMINAL

    async def follow(self) -> None:
        while not self.done:
            try:
                async with websockets.connect(self.url, open_timeout=5) as ws:
                    subscribe = {"type": "subscribe", "campaign_id": self.campaign_id, "last_sequence": self.last}
                    await ws.send(json.dumps(subscribe))
                    async for raw in ws:
                        frame = json.loads(raw)
                        assert frame["type"] not in ("snapshot", "error"), frame  # no resync, no refusal
                        if frame["type"] == "subscribed":
                            self.subscribed_at.append(time.monotonic())
                            self.connected.set()
                        if frame["type"] == "event" and "sequence" in frame:
                            self.events.append(frame)
                            if self.done:
                                return
                self.closes.append(ws.close_code)
            except websockets.ConnectionClosed as closed:
                self.closes.append(closed.rcvd.code if closed.rcvd else None)
            except (OSError, TimeoutError, websockets.InvalidHandshake):
                self.refused += 1
            await asyncio.sleep(0.2)  # the client's reconnect backoff, not a wait for a condition

    async def finish(self) -> None:
        await asyncio.wait_for(self.task, TIMEOUT)


class SseWatcher(Watcher):
    """The same frontend on server-sent events: on any end of the stream it reconnects through the
    balancer with ``Last-Event-ID``, as ``EventSource`` does."""

    def __init__(self, url: str, token: str, campaign_id: str) -> None:
        self.stream_url, self.token = f"{url}/api/campaigns/{campaign_id}/stream/", token
        super().__init__(url, token, campaign_id)

    async def follow(self) -> None:
        while not self.done:
            headers = {"Authorization": f"Bearer {self.token}", "Last-Event-ID": str(self.last)}
            streaming = False
            try:
                async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=30)) as client:
                    async with client.stream("GET", self.stream_url, headers=headers) as response:
                        if response.status_code != 200:
                            self.refused += 1
                        else:
                            self.subscribed_at.append(time.monotonic())
                            self.connected.set()
                            streaming = True
                            name, data = "", None
                            async for line in response.aiter_lines():
                                if line.startswith("event: "):
                                    name = line[7:]
                                    assert name not in ("snapshot", "stream.error"), name  # no resync, no refusal
                                elif line.startswith("data: "):
                                    data = json.loads(line[6:])
                                elif not line and data is not None:
                                    if "sequence" in data:
                                        self.events.append(data)
                                        if self.done:
                                            return
                                    name, data = "", None
                            self.closes.append(None)
            except (httpx.HTTPError, OSError):
                if streaming:
                    self.closes.append(None)  # the stream was cut (its host died, its process went)
                else:
                    self.refused += 1
            await asyncio.sleep(0.2)  # the client's reconnect delay (EventSource's retry), not a wait for a condition


@contextlib.asynccontextmanager
async def alice_campaign(cluster: Cluster):
    """Alice's API client through the balancer, her access token and a new campaign's id; every
    client the test makes is added to ``clients`` and stopped at the end."""
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as api:
        login = await api.post("/api/auth/token/", json={"username": "alice", "password": PASSWORD})
        assert login.status_code == 200, login.text
        token = login.json()["access"]
        api.headers["Authorization"] = f"Bearer {token}"
        created = await api.post("/api/campaigns/", json={"name": "Hosts", "brief": "Bottles for commuters."})
        assert created.status_code == 201, created.text
        clients: list = []
        try:
            yield SimpleNamespace(api=api, token=token, id=created.json()["id"], clients=clients)
        finally:
            for client in clients:
                if isinstance(client, Watcher):
                    client.task.cancel()
                else:
                    client.kill()


async def start_run(campaign) -> None:
    started = await campaign.api.post(f"/api/campaigns/{campaign.id}/runs/", json={})
    assert started.status_code == 202, started.text


def watcher(cluster: Cluster, campaign, kind: type[Watcher] = Watcher) -> Watcher:
    campaign.clients.append(kind(cluster.url, campaign.token, campaign.id))
    return campaign.clients[-1]


async def logged_sequences(api: httpx.AsyncClient, campaign_id: str) -> list[int]:
    sequences, url = [], f"/api/campaigns/{campaign_id}/events/?limit=500"
    while url:
        page = (await api.get(url)).json()
        sequences += [event["sequence"] for event in page["results"]]
        url = page["next"]
    return sequences


def signalr_client(cluster: Cluster, campaign) -> NodeClient:
    """``@microsoft/signalr`` (hub_client.mjs ``failover``) with the balancer as its only server."""
    server, user = SimpleNamespace(url=cluster.url), SimpleNamespace(username="alice")
    campaign.clients.append(NodeClient("failover", server, user, SimpleNamespace(public_id=campaign.id)))
    return campaign.clients[-1]


def stateful_client(cluster: Cluster, campaign, protocol: str = "json") -> NodeClient:
    """``@microsoft/signalr`` with stateful reconnect (hub_client.mjs ``stateful``) through the balancer."""
    server, user = SimpleNamespace(url=cluster.url), SimpleNamespace(username="alice")
    client = NodeClient("stateful", server, user, SimpleNamespace(public_id=campaign.id), HUB_PROTOCOL=protocol)
    campaign.clients.append(client)
    return client


def signalr_sequences(client: NodeClient) -> list[int]:
    return [line["sequence"] for line in client.seen if line["event"] == "ReceiveOrchestrationEvent"]


async def in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


async def a_watched_run(cluster: Cluster, campaign) -> tuple[Watcher, int]:
    """A native client watching the campaign, and its run started and under way (the last sequence seen)."""
    native = watcher(cluster, campaign)
    await asyncio.wait_for(native.connected.wait(), TIMEOUT)
    await start_run(campaign)
    return native, await under_way([native])


async def under_way(natives: list[Watcher]) -> int:
    """Wait until the run has begun (a few durable events seen); the last sequence seen."""
    await in_thread(until, lambda: any(w.last >= 3 for w in natives), "the run under way", TIMEOUT)
    return max(w.last for w in natives)


async def test_a_web_host_dies_mid_run_and_every_client_resumes_through_the_balancer_with_nothing_lost(cluster):
    with logs_on_failure(cluster):
        cluster.all_up()
        async with alice_campaign(cluster) as campaign:
            # Every client starts on web1 (web2 drained meanwhile), so that web1's death reaches them all.
            cluster.admin("set server web/web2 state drain")
            natives = [watcher(cluster, campaign), watcher(cluster, campaign, SseWatcher)]
            for native in natives:
                await asyncio.wait_for(native.connected.wait(), TIMEOUT)
            hub = signalr_client(cluster, campaign)
            await in_thread(hub.expect, "subscribed")
            kept = stateful_client(cluster, campaign)  # stateful reconnect: no onreconnected, no resubscribe
            await in_thread(kept.expect, "subscribed")
            # WebSocket, SSE, SignalR, SignalR with stateful reconnect
            assert cluster.servers()["web1"]["scur"] == "4", cluster.servers()["web1"]
            cluster.admin("set server web/web2 state ready")
            cluster.wait_up("web2")

            await start_run(campaign)
            killed_at = await under_way(natives)
            cluster.webs[0].power_off()  # no FIN, no RST: the machine is gone
            powered_off = time.monotonic()

            for native in natives:
                await native.finish()
            await in_thread(hub.expect, "failover_finished", 90)
            await in_thread(kept.finish, 90)
            log = await logged_sequences(campaign.api, campaign.id)
            back = max(native.subscribed_at[1] - powered_off for native in natives)
            print(f"\nweb1 powered off at sequence {killed_at} of {len(log)}; clients resumed in {back:.1f} s", end=" ")
            assert log == list(range(1, len(log) + 1)) and natives[0].events[-1]["event"] == "campaign.completed"
            assert killed_at < len(log), "web1 died while the run was still going"
            for native in natives:
                assert [event["sequence"] for event in native.events] == log, "every event once, in order"
                assert native.closes, "its connection to web1 was cut"
            assert signalr_sequences(hub) == log
            assert [line for line in hub.seen if line["event"] == "disconnected"], "the SignalR client was moved too"
            assert_resumed_statefully(kept.seen, log, sockets=2)  # its session taken over from the dead web1
            assert cluster.status("web1") == "DOWN"


async def test_a_rolling_restart_of_every_web_process_loses_no_event(cluster):
    with logs_on_failure(cluster):
        cluster.all_up()
        async with alice_campaign(cluster) as campaign:
            natives = [watcher(cluster, campaign) for _ in range(2)]
            for native in natives:
                await asyncio.wait_for(native.connected.wait(), TIMEOUT)
            hub = signalr_client(cluster, campaign)
            await in_thread(hub.expect, "subscribed")
            kept = stateful_client(cluster, campaign, "messagepack")
            await in_thread(kept.expect, "subscribed")
            await start_run(campaign)
            await under_way(natives)

            # docs/DEPLOY.md's rolling restart: one web process at a time, drained in the balancer first.
            for index, host in enumerate(cluster.webs, start=1):
                name = f"web{index}"
                cluster.admin(f"set server web/{name} state drain")
                await in_thread(cluster.stop_gracefully, host)
                cluster.start_web(host)
                await in_thread(until, functools.partial(cluster.serving, host), f"the new {name} serving", TIMEOUT)
                cluster.admin(f"set server web/{name} state ready")
                await in_thread(cluster.wait_up, name)
            restarted_at = max(w.last for w in natives)

            for native in natives:
                await native.finish()
            await in_thread(hub.expect, "failover_finished", 90)
            await in_thread(kept.finish, 90)
            log = await logged_sequences(campaign.api, campaign.id)
            print(f"\nevery web process restarted by sequence {restarted_at} of {len(log)}", end=" ")
            assert restarted_at < len(log), "the rolling restart ended before the run did"
            assert log == list(range(1, len(log) + 1))
            for native in natives:
                assert [event["sequence"] for event in native.events] == log, "every event once, in order"
                assert 1001 in native.closes, f"told to go away (1001), not dropped: {native.closes}"
            assert signalr_sequences(hub) == log
            assert [line for line in hub.seen if line["event"] == "disconnected"], "the SignalR client was moved too"
            # Closed with its session kept by each process that stopped: resumed on the other, twice at most.
            sockets = len(events_in(kept.seen, "socket_opened"))
            assert sockets >= 2
            assert_resumed_statefully(kept.seen, log, sockets=sockets)


async def test_reloading_the_balancer_keeps_the_sockets_it_has(cluster):
    """SIGUSR2 to HAProxy's master: a new worker takes new connections; the old one keeps serving
    the WebSockets it has (until they end, or hard-stop-after)."""
    with logs_on_failure(cluster):
        cluster.all_up()
        async with alice_campaign(cluster) as campaign:
            before, reloaded_at = await a_watched_run(cluster, campaign)
            loads = cluster.log(cluster.lb).read_text().count("Loading success")
            cluster.haproxy.send_signal(signal.SIGUSR2)
            reloaded = lambda: cluster.log(cluster.lb).read_text().count("Loading success") > loads  # noqa: E731
            await in_thread(until, reloaded, "the balancer reloaded", TIMEOUT)
            after = watcher(cluster, campaign)
            await asyncio.wait_for(after.connected.wait(), TIMEOUT)
            await before.finish()
            await after.finish()
            log = await logged_sequences(campaign.api, campaign.id)
            assert reloaded_at < len(log), "the reload happened while the run was going"
            assert [event["sequence"] for event in before.events] == log
            assert before.closes == [] and before.refused == 0, "the socket it had was never cut"
            assert [event["sequence"] for event in after.events] == log


def test_one_scheduler_for_two_workers(cluster):
    """The worker host runs two workers and the one beat (deploy/Procfile): only beat sends the
    schedule, and the workers run what it sends."""

    def received() -> bool:
        return any("runs_recover" in line and "received" in line for line in cluster.log(cluster.work).open())

    until(received, "a scheduled recovery task run by a worker", TIMEOUT)
    lines = cluster.log(cluster.work).read_text().splitlines()
    sent_by = {line.split("|")[0].split()[-1] for line in lines if "Sending due task" in line}
    assert sent_by == {"beat.1"}, sent_by
    received_by = {line.split("|")[0].split()[-1] for line in lines if "runs_recover" in line and "received" in line}
    assert received_by <= {"worker.1", "worker.2"} and received_by, received_by


async def test_a_host_back_from_the_dead_answers_every_request(cluster):
    """The balancer keeps idle connections to each web process for reuse; those to a host that died
    must not be reused when it is back (its new process never knew them): every request succeeds."""
    with logs_on_failure(cluster):
        cluster.all_up()
        async with alice_campaign(cluster) as campaign:
            for _ in range(10):  # connections to both web processes, left idle in the balancer's pool
                assert (await campaign.api.get("/api/campaigns/")).status_code == 200
            cluster.webs[0].power_off()
            await in_thread(until, lambda: cluster.status("web1") == "DOWN", "web1 DOWN", TIMEOUT)
            await in_thread(cluster.all_up)
            async with httpx.AsyncClient(base_url=cluster.url, timeout=10, headers=campaign.api.headers) as api:
                answers = [
                    (await api.post("/api/campaigns/", json={"name": f"Back {n}", "brief": "Again."})).status_code
                    for n in range(20)
                ]
            assert answers == [201] * 20


async def test_redis_restarted_behind_the_balancer_cuts_no_socket(cluster):
    """Every web process loses Redis at once. The balancer checks liveness (/healthz), not /readyz,
    so it keeps them all in service: the sockets stay open and the run's events all arrive (with
    /readyz, every server was taken out and every socket cut)."""
    with logs_on_failure(cluster):
        cluster.all_up()
        async with alice_campaign(cluster) as campaign:
            native, _ = await a_watched_run(cluster, campaign)
            await in_thread(cluster.restart_redis, 3.0)  # three checks' worth of outage
            await native.finish()
            log = await logged_sequences(campaign.api, campaign.id)
            assert [event["sequence"] for event in native.events] == log == list(range(1, len(log) + 1))
            assert native.closes == [] and native.refused == 0, "the socket stayed open through the outage"
            assert native.events[-1]["event"] == "campaign.completed"
            assert all(row["status"] == "UP" for row in cluster.servers().values()), cluster.servers()
