"""Keep a set of child processes running: what ``make run`` uses for Redis, daphne and the worker.

A child that exits is started again after a backoff (0.5 s, doubling to 30 s; back to 0.5 s once it
has stayed up for a minute), with a loud log line naming it and how it ended. A child that exits
``max_exits`` times within ``window`` seconds is crash-looping: every child is stopped and ``run``
returns 1 with a message saying which one and why. ``stop`` (Ctrl-C, SIGTERM) stops them all and
``run`` returns 0.

Each child runs in its own process group, so stopping it (SIGTERM, then SIGKILL after a grace
period) reaches the processes it forked too, such as Celery's pool.

Why not supervisord, circus or honcho: honcho stops everything when one process exits (what
``make run`` did before); supervisord and circus are daemons with their own configuration files and
control sockets, and neither ends the foreground command when a child crash-loops. This is the
one loop ``make run`` needs, tested in ``marketing_agents/tests/test_supervisor.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit status {returncode}"


@dataclass
class Child:
    """One supervised process. ``ready`` (optional) is polled after a start until it is true."""

    name: str
    argv: list[str]
    cwd: Path | None = None
    env: dict[str, str] | None = None
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    exits: deque[float] = field(default_factory=deque)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        *,
        log: Callable[[str], None] = print,
        max_exits: int = 5,
        window: float = 60.0,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
        ready_timeout: float = 30.0,
        on_restart: Callable[[Child], None] | None = None,
    ) -> None:
        self.children = children
        self.log = log
        self.max_exits, self.window = max_exits, window
        self.backoff_first, self.backoff_max = backoff_first, backoff_max
        self.ready_timeout = ready_timeout
        self.on_restart = on_restart
        self.stopping = threading.Event()

    # --- control -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to stop every child and return (safe from a signal handler or another thread)."""
        self.stopping.set()

    def child(self, name: str) -> Child:
        return next(child for child in self.children if child.name == name)

    def run(self, *, started: Callable[[], None] | None = None) -> int:
        try:
            for child in self.children:
                self._start(child)
                self.log(f"{child.name} started (pid {child.pid})")
                if self.stopping.is_set():
                    return 0
            if started is not None:
                started()
            while not self.stopping.wait(0.1):
                for child in self.children:
                    failed = self._check(child)
                    if failed:
                        self.log(failed)
                        return 1
            return 0
        finally:
            self._stop_all()

    # --- one child ---------------------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(child.argv, cwd=child.cwd, env=child.env, start_new_session=True)
        child.started_at, child.restart_at = time.monotonic(), None
        if child.ready is None:
            return
        deadline = time.monotonic() + self.ready_timeout
        while not child.ready():
            if child.process.poll() is not None or self.stopping.is_set():
                return  # the main loop sees the exit
            if time.monotonic() > deadline:
                self.log(f"{child.name} (pid {child.pid}) is not ready after {self.ready_timeout:.0f} s; going on")
                return
            time.sleep(0.1)

    def _check(self, child: Child) -> str:
        """Notice an exit, schedule the restart, start it when due; a crash loop returns its message."""
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restarts += 1
                self._start(child)
                self.log(f"{child.name} restarted (pid {child.pid}, restart {child.restarts})")
                if self.on_restart is not None:
                    self.on_restart(child)
            return ""
        if child.process is None or child.process.poll() is None:
            return ""
        how = describe_exit(child.process.returncode)
        _signal_group(child, signal.SIGKILL)  # what it forked (Celery's pool) must not outlive it
        if now - child.started_at >= STABLE_AFTER:
            child.exits.clear()  # it had been running fine: a new incident, backoff from the start
        child.exits.append(now)
        while child.exits and now - child.exits[0] > self.window:
            child.exits.popleft()
        if len(child.exits) >= self.max_exits:
            return (
                f"!!! {child.name} is crash-looping ({len(child.exits)} exits within {self.window:.0f} s, "
                f"the last with {how}); stopping everything. Its output above says why."
            )
        delay = min(self.backoff_max, self.backoff_first * 2 ** (len(child.exits) - 1))
        child.restart_at = now + delay
        self.log(f"!!! {child.name} (pid {child.pid}) exited with {how}; restarting it in {delay:.1f} s")
        return ""

    def _stop_all(self, grace: float = 10.0) -> None:
        running = [c for c in reversed(self.children) if c.process is not None and c.process.poll() is None]
        for child in running:
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in running:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{child.name} (pid {child.pid}) did not stop within {grace:.0f} s; killing it")
                _signal_group(child, signal.SIGKILL)
                child.process.wait()


def _signal_group(child: Child, signum: int) -> None:
    try:
        os.killpg(child.process.pid, signum)
    except ProcessLookupError:
        pass
