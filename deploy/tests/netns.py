"""Hosts for multi-host tests, made of Linux network namespaces (``ip netns``, as root).

A :class:`Sandbox` is a switch (a bridge in a namespace of its own) and hosts plugged into it, each
a namespace with one address on a private /24. The test process itself is the clients' machine: a
veth of its own is plugged into the same switch, so it reaches the hosts only through their
addresses. Everything is deleted by :meth:`Sandbox.close`, processes first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def why_namespaces_cannot_be_made() -> str | None:
    """None when this machine can make network namespaces; otherwise the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "iproute2's `ip` is not installed"
    probe = f"ma{os.getpid()}-probe"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


class Host:
    """One machine: a network namespace with ``address`` on the sandbox's switch."""

    def __init__(self, sandbox: Sandbox, name: str, address: str) -> None:
        self.sandbox = sandbox
        self.name = name
        self.netns = f"{sandbox.prefix}-{name}"
        self.address = address
        self.processes: list[subprocess.Popen] = []

    def popen(self, argv: list[str], *, log: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
        """Start ``argv`` on this host, in a session of its own, logging to ``log``."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *argv],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def run(self, argv: list[str], *, env: dict[str, str], cwd: Path | None = None, timeout: float = 120):
        argv = ["ip", "netns", "exec", self.netns, *argv]
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)

    def pids(self) -> list[int]:
        listed = ip("netns", "pids", self.netns, check=False).stdout.split()
        return [int(pid) for pid in listed]

    def power_off(self) -> None:
        """The machine dies: its network goes silent (no FIN, no RST reaches anyone) and every
        process on it is killed with SIGKILL (again, while any is left: one may fork meanwhile)."""
        ip("-n", self.netns, "link", "set", "eth0", "down", check=False)
        deadline = time.monotonic() + 10
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)  # the kernel reaping them; the loop re-reads what is left
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        self.processes.clear()

    def power_on(self) -> None:
        """Its network is back (processes are started again by the test)."""
        ip("-n", self.netns, "link", "set", "eth0", "up")


class Sandbox:
    """A switch and the hosts on it, on 10.213.N.0/24 (N from the test's pid, so that two runs on one
    machine do not collide); the test process is 10.213.N.254."""

    def __init__(self) -> None:
        self.prefix = f"ma{os.getpid()}"
        self.subnet = f"10.213.{20 + os.getpid() % 200}"
        self.switch = f"{self.prefix}-switch"
        self.client_link = self.prefix  # the test process's end, in its own namespace
        self.client_address = f"{self.subnet}.254"
        self.hosts: list[Host] = []
        try:
            ip("netns", "add", self.switch)
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", self.switch, "link", "set", "br0", "up")
            ip("link", "add", self.client_link, "type", "veth", "peer", "name", "client", "netns", self.switch)
            ip("-n", self.switch, "link", "set", "client", "master", "br0", "up")
            ip("addr", "add", f"{self.client_address}/24", "dev", self.client_link)
            ip("link", "set", self.client_link, "up")
        except BaseException:
            self.close()
            raise

    def host(self, name: str, last_octet: int) -> Host:
        host = Host(self, name, f"{self.subnet}.{last_octet}")
        ip("netns", "add", host.netns)
        self.hosts.append(host)
        ip("link", "add", "eth0", "netns", host.netns, "type", "veth", "peer", "name", name, "netns", self.switch)
        ip("-n", self.switch, "link", "set", name, "master", "br0", "up")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        return host

    def close(self) -> None:
        """Everything goes, whatever fails on the way."""
        for host in self.hosts:
            try:
                host.power_off()
            except Exception as exc:  # keep going: the namespaces must go too
                print(f"powering off {host.name} failed: {exc!r}")
        for host in self.hosts:
            ip("netns", "del", host.netns, check=False)
        ip("link", "del", self.client_link, check=False)
        ip("netns", "del", self.switch, check=False)
