"""The supervisor `make run` uses, with real child processes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from deploy.local.supervisor import Child, Supervisor, describe_exit

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def wait_until(check, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Running:
    """A supervisor running in a thread, as `make run` runs it in its main thread."""

    def __init__(self, children: list[Child], **options) -> None:
        self.lines: list[str] = []
        self.restarted: list[str] = []
        self.supervisor = Supervisor(
            children, log=self.lines.append, on_restart=lambda c: self.restarted.append(c.name), **options
        )
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.supervisor.run()

    def pid(self, name: str) -> int | None:
        return self.supervisor.child(name).pid

    def finish(self, timeout: float = 30.0) -> int | None:
        self.supervisor.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the supervisor stopped"
        return self.code


def test_a_killed_child_is_restarted_and_said_so_and_the_others_keep_running():
    running = Running([Child("web", SLEEPER), Child("worker", SLEEPER)], backoff_first=0.05)
    web = wait_until(lambda: running.pid("web"), "web started")
    worker = wait_until(lambda: running.pid("worker"), "worker started")
    os.kill(worker, signal.SIGKILL)
    new_worker = wait_until(lambda: running.pid("worker") != worker and running.pid("worker"), "worker restarted")
    assert alive(new_worker) and running.pid("web") == web and alive(web)
    assert any(f"worker (pid {worker}) exited with killed by SIGKILL" in line for line in running.lines), running.lines
    assert running.restarted == ["worker"]
    assert running.finish() == 0
    assert not alive(new_worker) and not alive(web), "stopping stops every child"


def test_a_crash_looping_child_stops_everything_with_a_clear_message():
    crashing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    running = Running([Child("web", SLEEPER), Child("worker", crashing)], backoff_first=0.01, max_exits=5, window=60)
    running.thread.join(30)
    assert running.code == 1
    assert "worker is crash-looping (5 exits within 60 s, the last with exit status 3)" in running.lines[-1]
    assert running.restarted == ["worker"] * 4
    assert not alive(running.pid("web")), "the other children were stopped"


def test_backoff_doubles_between_consecutive_exits():
    crashing = [sys.executable, "-c", "import sys; sys.exit(1)"]
    running = Running([Child("worker", crashing)], backoff_first=0.1, max_exits=4)
    running.thread.join(30)
    delays = [line.rsplit("in ", 1)[1] for line in running.lines if "restarting it in" in line]
    assert delays == ["0.1 s", "0.2 s", "0.4 s"]
    assert running.code == 1


def test_what_a_dead_child_forked_dies_with_it():
    # The child forks a grandchild (as Celery forks its pool) and prints its pid, then sleeps.
    script = (
        "import os, sys, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(600)\n"
        "else:\n"
        "    open(sys.argv[1], 'w').write(str(pid))\n"
        "    time.sleep(600)\n"
    )
    import tempfile

    with tempfile.NamedTemporaryFile(delete=False) as handle:
        path = handle.name
    os.unlink(path)
    running = Running([Child("worker", [sys.executable, "-c", script, path])], backoff_first=5)
    grandchild = int(wait_until(lambda: os.path.exists(path) and open(path).read(), "grandchild forked"))
    os.kill(running.pid("worker"), signal.SIGKILL)
    wait_until(lambda: not alive(grandchild) or _zombie(grandchild), "the grandchild killed")
    assert running.finish() == 0
    os.unlink(path)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize(
    ("code", "text"),
    [(0, "exit status 0"), (3, "exit status 3"), (-9, "killed by SIGKILL"), (-77, "killed by signal 77")],
)
def test_exits_are_described_for_people(code, text):
    assert describe_exit(code) == text
