"""Real processes for end-to-end tests: Celery workers (and, later, daphne) against the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection

BASE_DIR = Path(settings.BASE_DIR)

# Fast, deterministic settings for the processes a test starts; a test may override any of them.
E2E_ENV = {
    "AGENT_CHUNK_DELAY_MS": "0",
    "AGENT_RETRY_BASE_MS": "50",
    "AGENT_RETRY_MAX_MS": "200",
    "RUN_LEASE_SECONDS": "3",
    "RUN_RECOVERY_INTERVAL_SECONDS": "1",
    "RUN_REQUEUE_AFTER_SECONDS": "20",
    "LOG_LEVEL": "INFO",
    "ORCHESTRATION_SIMULATION": "1",  # the tests' campaigns use settings.simulate
    "API_RATE_PER_MINUTE": "0",  # the rate limit is off but where it is tested (accounts/tests/test_throttling.py)
    # Neither is the connection cap per user (tested in realtime/tests/test_connection_cap.py).
    "WS_MAX_CONNECTIONS_PER_USER": "0",
}


def test_database_url() -> str:
    """The URL of the database pytest-django created, so other processes see the test's rows."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def process_env(**overrides: str) -> dict[str, str]:
    return {
        **os.environ,
        **E2E_ENV,
        "DATABASE_URL": test_database_url(),
        "DJANGO_SETTINGS_MODULE": "marketing_agents.settings",
        **overrides,
    }


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedProcess:
    """A project process in its own session (so kill reaches its children), logging to a file."""

    name = "process"
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 60):
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv(), cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.kill()  # the caller never gets it to stop: it must not outlive the test
        raise RuntimeError(f"{self.name} not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """kill -9 of the process and every process it forked, as when a machine dies."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class Worker(ManagedProcess):
    """A Celery worker (with its beat scheduler, which runs the recovery task)."""

    def __init__(self, log_dir: Path, concurrency: int = 2, **env: str) -> None:
        self.name = f"w{uuid.uuid4().hex[:8]}"
        self.log_path = log_dir / f"{self.name}.log"
        self.schedule = log_dir / f"{self.name}-beat"
        self.concurrency = concurrency
        self.env = process_env(**env)

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "marketing_agents",
            "worker",
            "-n",
            f"{self.name}@%h",
            "--loglevel",
            "INFO",
            "--concurrency",
            str(self.concurrency),
            "--without-mingle",
            "--without-gossip",
            "--beat",
            "--schedule",
            str(self.schedule),
        ]

    def ready(self) -> bool:
        return " ready." in self.log()


class WebServer(ManagedProcess):
    """daphne serving the project (marketing_agents.serve), as `make run` starts it."""

    name = "daphne"

    def __init__(self, log_dir: Path, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.log_path = log_dir / f"daphne-{self.port}-{uuid.uuid4().hex[:6]}.log"
        self.env = process_env(**env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "marketing_agents.serve", "-b", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False


class RedisServer(ManagedProcess):
    """A private redis-server for a fault test: stopped and started again like the real thing.

    ``persistent``: append-only file on, so a restart comes back with its data; otherwise a
    restart comes back empty."""

    name = "redis"

    def __init__(
        self, log_dir: Path, *, persistent: bool = False, replica_of: int | None = None, password: str | None = None
    ) -> None:
        self.port = free_port()
        self.data_dir = log_dir / f"redis-{self.port}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.persistent = persistent
        self.replica_of = replica_of
        self.password = password  # requirepass (and masterauth, for a replica)
        self.env = dict(os.environ)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        binary = os.environ.get("DEVSERVICES_REDIS_SERVER", "redis-server")
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--save", ""]
        replication = ["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []
        if self.password:
            replication += ["--requirepass", self.password, "--masterauth", self.password]
        return [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            *persistence,
            *replication,
        ]

    def info(self, section: str) -> dict:
        """INFO ``section``, as redis-py parses it."""
        import redis

        client = redis.Redis(port=self.port, password=self.password, socket_timeout=2, decode_responses=True)
        return client.info(section)

    def ready(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # NOAUTH: up, with a password
        except OSError:
            return False

    def restart_after(self, down_for: float = 0.0):
        """Stop (kill -9: no save), stay down ``down_for`` seconds, start again on the same port."""
        self.kill()
        time.sleep(down_for)  # the outage itself: how long the fault lasts, not a wait for a condition
        return self.start()


def restart_postgres(down_for: float = 0.0) -> None:
    """Restart the suite's PostgreSQL for real (``pg_ctl stop -m fast``: every connection is cut),
    keep it down ``down_for`` seconds, and start it again on the same port and data."""
    bin_dir, data_dir = os.environ["DEVSERVICES_POSTGRES_BIN"], os.environ["DEVSERVICES_POSTGRES_DATA"]
    runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    pg_ctl = [*runner, f"{bin_dir}/pg_ctl", "-D", data_dir, "-w"]
    subprocess.run([*pg_ctl, "-m", "fast", "stop"], check=True, capture_output=True, timeout=60)
    time.sleep(down_for)  # the outage itself: how long the fault lasts, not a wait for a condition
    subprocess.run([*pg_ctl, "-l", f"{data_dir}/restart.log", "start"], check=True, capture_output=True, timeout=60)


def run_without_database(script: str) -> subprocess.CompletedProcess:
    """Run a Python script in a fresh process of the project whose database is unreachable (nothing
    listens on port 1): the way to see what a web process answers while PostgreSQL is down."""
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", "ALLOWED_HOSTS": "testserver"},
        capture_output=True,
        text=True,
        timeout=60,
    )


class SentinelServer(RedisServer):
    """A Redis Sentinel (redis-server in sentinel mode, as Debian's redis-sentinel runs it) watching
    ``primary`` as "mymaster", quorum 2, quick to declare it down (1 s) for a test."""

    name = "sentinel"

    def __init__(
        self,
        log_dir: Path,
        primary: int,
        master: str = "mymaster",
        *,
        auth_pass: str | None = None,
        password: str | None = None,
    ) -> None:
        """``auth_pass``: the data nodes' password; ``password``: this Sentinel's own (requirepass)."""
        super().__init__(log_dir)
        self.master = master
        self.password = password
        self.config = self.data_dir / "sentinel.conf"  # Sentinel rewrites its file: it must be writable
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.data_dir}",
            f"sentinel monitor {master} 127.0.0.1 {primary} 2",
            f"sentinel down-after-milliseconds {master} 1000",
            f"sentinel failover-timeout {master} 10000",
            f"sentinel parallel-syncs {master} 1",
        ]
        if auth_pass:
            lines.append(f"sentinel auth-pass {master} {auth_pass}")
        if password:  # the Sentinels talk to each other with it too
            lines += [f"requirepass {password}", f"sentinel sentinel-pass {password}"]
        self.config.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        binary = os.environ.get("DEVSERVICES_REDIS_SERVER", "redis-server")
        return [binary, str(self.config), "--sentinel"]

    def primary_port(self) -> int:
        import redis

        client = redis.Redis(port=self.port, password=self.password, socket_timeout=2, decode_responses=True)
        return int(client.execute_command("SENTINEL", "get-master-addr-by-name", self.master)[1])


def until(condition, what: str, timeout: float) -> float:
    """Wait for ``condition()``; returns how long it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"no {what} within {timeout} s"
        time.sleep(0.1)  # polling for the condition above, bounded by the timeout
    return time.monotonic() - started
