"""What brute force on the login costs the server, before and after a lockout (accounts/lockout.py):
one real web process (marketing_agents.serve) on PostgreSQL and Redis private to the run.

    .venv/bin/python bench/logins.py [--attempts 2000] [--threads 8]

wrong_passwords: wrong passwords for a real user on `POST /api/auth/token/` with the lockout out of
the way (LOGIN_FAILURE_LIMIT very high): attempts a second and the web process's CPU per attempt
(the password hasher's work). refused: the same from the same address with the default limit: the
first failures lock the username and the address out, then every attempt is refused (429); refused
attempts a second and CPU per refused attempt. Not part of `make test`: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

from bench.accounts import cpu_seconds, django  # noqa: E402
from deploy.local import services as devservices  # noqa: E402

PY = sys.executable


def hammer(url: str, attempts: int, threads: int) -> tuple[float, dict[int, int]]:
    """``attempts`` wrong logins from ``threads`` clients; the seconds taken and the statuses seen."""
    statuses: dict[int, int] = {}

    def one_client(count: int) -> None:
        with httpx.Client(timeout=60) as client:
            for _ in range(count):
                response = client.post(url, json={"username": "operator", "password": "not-the-password"})
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one_client, [attempts // threads] * threads))
    return time.monotonic() - started, statuses


def scenario(env: dict[str, str], name: str, limit: str, attempts: int, threads: int) -> dict:
    port = devservices.free_port()
    log = open(BASE / ".run" / f"bench-logins-{name}.log", "w")
    web = subprocess.Popen(
        [PY, "-m", "marketing_agents.serve", "-b", "127.0.0.1", "-p", str(port)],
        cwd=BASE,
        env={**env, "LOGIN_FAILURE_LIMIT": limit},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        devservices.wait_for(lambda: _healthy(port), "web", 60, web)
        url = f"http://127.0.0.1:{port}/api/auth/token/"
        if name == "refused":
            hammer(url, 8, 1)  # past the limit: locked out from here on
        cpu_before = cpu_seconds(web.pid)
        seconds, statuses = hammer(url, attempts, threads)
        cpu = cpu_seconds(web.pid) - cpu_before
        done = sum(statuses.values())
        return {
            "attempts": done,
            "statuses": statuses,
            "seconds": round(seconds, 2),
            "attempts_per_second": round(done / seconds, 1),
            "web_cpu_ms_per_attempt": round(1000 * cpu / done, 2),
        }
    finally:
        devservices.stop([web])


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    services = devservices.test_services()
    env = {
        **os.environ,
        **services.__enter__(),
        "DJANGO_SETTINGS_MODULE": "marketing_agents.settings",
        "LOG_LEVEL": "ERROR",
    }
    env["DATABASE_URL"] = env["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    try:
        subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=BASE, env=env, check=True)
        django(env, "from campaigns.tests.factories import UserFactory\nUserFactory(username='operator')")
        # The hasher's work makes these slow: a tenth as many are enough to measure it.
        results["wrong_passwords"] = scenario(
            env, "wrong", "1000000000", max(args.threads, args.attempts // 10), args.threads
        )
        results["refused"] = scenario(env, "refused", "5", args.attempts, args.threads)
    finally:
        services.__exit__(None, None, None)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
