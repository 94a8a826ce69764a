"""Local services for ``make run`` and ``make test``: Redis, PostgreSQL, daphne and a Celery worker.

    python -m deploy.local run            # what `make run` does after installing
    python -m deploy.local test [ARGS]    # what `make test` does: pytest ARGS

``test`` starts a private PostgreSQL (initdb in a temporary directory) and a private Redis, both on
free loopback ports, points DATABASE_URL and REDIS_URL at them, runs pytest and removes them.
``run`` starts a private Redis on 127.0.0.1:6379 when REDIS_URL is unset and nothing answers there,
migrates, makes sure an operator account exists, then runs daphne and a Celery worker in the
foreground, supervised (deploy/local/supervisor.py: restarted when they exit), until Ctrl-C.
Missing Debian packages are installed when running as root.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from deploy.local.supervisor import Child, Supervisor

BASE_DIR = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable
_apt_updated = False


def say(message: str) -> None:
    print(f"[devservices] {message}", flush=True)


def apt_install(*packages: str) -> None:
    global _apt_updated
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(f"missing {', '.join(packages)}: install it (Debian package) and try again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        say("apt-get update")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        _apt_updated = True
    say(f"apt-get install {' '.join(packages)}")
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env, stdout=subprocess.DEVNULL)


def redis_server_binary() -> str:
    if not shutil.which("redis-server"):
        apt_install("redis-server")
    return shutil.which("redis-server") or "redis-server"


def postgres_bin_dir() -> Path:
    def find() -> Path | None:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
        if candidates:
            return Path(candidates[0]).parent
        initdb = shutil.which("initdb")
        return Path(initdb).resolve().parent if initdb else None

    found = find()
    if found is None:
        apt_install("postgresql")
        found = find()
    if found is None:
        raise SystemExit("PostgreSQL's initdb was not found after installing postgresql")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for(check, what: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what} exited with code {process.returncode} while starting")
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start within {timeout:.0f} s")


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(port: int, data_dir: Path, *, persistent: bool) -> subprocess.Popen:
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)]
    args += ["--appendonly", "yes"] if persistent else ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for(lambda: redis_ping(port), "redis-server", process=process)
    return process


def as_postgres_user() -> list[str]:
    """initdb and postgres refuse to run as root: run them as the 'postgres' system user then."""
    if os.geteuid() != 0:
        return []
    if subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return ["runuser", "-u", "postgres", "--"]


def start_postgres(port: int, root: Path) -> subprocess.Popen:
    """initdb and start a private PostgreSQL. Its settings go into postgresql.auto.conf, so a test can
    restart it with plain ``pg_ctl -D DATA restart`` (DEVSERVICES_POSTGRES_* below)."""
    bin_dir = postgres_bin_dir()
    data_dir = root / "pgdata"
    data_dir.mkdir(parents=True)
    runner = as_postgres_user()
    if runner:
        os.chmod(root, 0o755)
        shutil.chown(data_dir, "postgres")
    subprocess.run(
        [
            *runner,
            str(bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    options = {
        "port": str(port),
        "unix_socket_directories": f"'{data_dir}'",
        "listen_addresses": "'127.0.0.1'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "300",
    }
    with (data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.writelines(f"{key} = {value}\n" for key, value in options.items())
    process = subprocess.Popen(
        [*runner, str(bin_dir / "postgres"), "-D", str(data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    wait_for(lambda: port_open(port), "postgres", process=process)
    return process


def stop_postgres(data_dir: Path) -> None:
    """A test may have restarted PostgreSQL (pg_ctl), so the server running now is not our child."""
    if (data_dir / "postmaster.pid").exists():
        pg_ctl = postgres_bin_dir() / "pg_ctl"
        subprocess.run(
            [*as_postgres_user(), str(pg_ctl), "-D", str(data_dir), "-m", "immediate", "stop"], capture_output=True
        )


def stop(processes: list[subprocess.Popen], timeout: float = 10.0) -> None:
    for process in processes:
        if process.poll() is None:
            with suppress(ProcessLookupError):
                process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def test_services() -> Iterator[dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="marketing-agents-test-"))
    processes: list[subprocess.Popen] = []
    try:
        redis_port, pg_port = free_port(), free_port()
        processes.append(start_redis(redis_port, root / "redis", persistent=False))
        processes.append(start_postgres(pg_port, root))
        say(f"PostgreSQL on 127.0.0.1:{pg_port}, Redis on 127.0.0.1:{redis_port} (data in {root})")
        (root / "metrics").mkdir()
        yield {
            "PROMETHEUS_MULTIPROC_DIR": str(root / "metrics"),
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{pg_port}/marketing_agents",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            # One key for every process of the suite, as on several hosts sharing a database.
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
            "DEVSERVICES_REDIS_SERVER": redis_server_binary(),
            # For the fault tests that restart the suite's PostgreSQL (marketing_agents/tests/processes.py).
            "DEVSERVICES_POSTGRES_BIN": str(postgres_bin_dir()),
            "DEVSERVICES_POSTGRES_DATA": str(root / "pgdata"),
        }
    finally:
        stop(processes)
        stop_postgres(root / "pgdata")
        shutil.rmtree(root, ignore_errors=True)


SIGNALR_CLIENT_DIR = BASE_DIR / "realtime" / "tests" / "js_signalr"


def install_signalr_client() -> None:
    """The real @microsoft/signalr client (pinned in package-lock.json) for test_signalr_client.py."""
    if (SIGNALR_CLIENT_DIR / "node_modules" / "@microsoft" / "signalr").is_dir():
        return
    if not shutil.which("npm"):
        apt_install("npm")
    say("npm ci in realtime/tests/js_signalr (@microsoft/signalr)")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel", "error"], cwd=SIGNALR_CLIENT_DIR, check=True)


def run_tests(args: list[str]) -> int:
    if not shutil.which("node"):
        apt_install("nodejs")  # the browser client's unit tests run on node's test runner
    if not Path("/usr/bin/chromium").exists():
        apt_install("chromium")  # the browser tests drive Debian's Chromium with Playwright
    if not shutil.which("haproxy"):
        apt_install("haproxy")  # the balancer of the production layout (deploy/tests)
    install_signalr_client()
    with test_services() as env:
        command = [PYTHON, "-m", "pytest", *args]
        return subprocess.run(command, cwd=BASE_DIR, env={**os.environ, **env}).returncode


def manage(*args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, check=True)


def fresh_metrics_dir(path: Path) -> None:
    """Every process writes its metrics here; files of an earlier run would be added in."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def worker_argv(*extra: str) -> list[str]:
    """A Celery worker as `make run` starts it. Gossip and mingle are off: nothing here uses them (they
    exchange worker state for monitoring and revocations), and their steps fail noisily, and in
    kombu 5.7 fatally, while the broker restarts (see marketing_agents/broker.py)."""
    return [
        PYTHON,
        "-m",
        "celery",
        "-A",
        "marketing_agents",
        "worker",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        *extra,
    ]


def count_restart(child: Child) -> None:
    """Supervisor restarts, on the web process's /metrics (PROMETHEUS_MULTIPROC_DIR is set by now)."""
    global _restarts_counter
    if _restarts_counter is None:
        from prometheus_client import Counter

        _restarts_counter = Counter("supervisor_restarts", "Children restarted by make run's supervisor.", ["child"])
    _restarts_counter.labels(child.name).inc()


_restarts_counter = None


def serve() -> int:
    children: list[Child] = []
    if not os.environ.get("REDIS_URL"):
        if redis_ping(6379):
            say("using the Redis already answering on 127.0.0.1:6379")
        else:
            data_dir = BASE_DIR / ".run" / "redis"
            data_dir.mkdir(parents=True, exist_ok=True)
            argv = [redis_server_binary(), "--port", "6379", "--bind", "127.0.0.1", "--dir", str(data_dir)]
            children.append(Child("redis", [*argv, "--appendonly", "yes"], ready=lambda: redis_ping(6379)))
            say("starting a private Redis on 127.0.0.1:6379 (data in .run/redis)")
        os.environ["REDIS_URL"] = "redis://127.0.0.1:6379/0"  # said outright: a PostgreSQL setup requires it
    fresh_metrics_dir(BASE_DIR / ".run" / "metrics")
    port = os.environ.get("PORT", "8000")
    schedule = str(BASE_DIR / ".run" / "celerybeat-schedule")
    children += [
        Child(
            "web",
            [PYTHON, "-m", "marketing_agents.serve", "-b", "127.0.0.1", "-p", port],
            cwd=BASE_DIR,
            ready=lambda: port_open(int(port)),
        ),
        Child("worker", worker_argv("--concurrency", "2", "--beat", "--schedule", schedule), cwd=BASE_DIR),
    ]
    supervisor = Supervisor(children, log=say, on_restart=count_restart)

    def on_signal(signum: int, frame: object) -> None:
        supervisor.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def started() -> None:
        say(f"serving on http://127.0.0.1:{port}/  (admin: /admin/, API docs: /api/docs/); Ctrl-C stops everything")

    manage("migrate", "--noinput", "-v", "0")
    manage("ensure_operator")
    code = supervisor.run(started=started)
    say("stopped")
    return code


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__)
        return 2
    if argv[0] == "run":
        return serve()
    return run_tests(argv[1:])
