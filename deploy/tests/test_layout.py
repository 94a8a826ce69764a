"""The production layout's files (deploy/), checked by the programs that read them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1]
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"


def haproxy_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = [shutil.which("haproxy") or "haproxy", "-c", "-f", str(HAPROXY_CFG)]
    return subprocess.run(argv, env=env, capture_output=True, text=True)


def test_the_balancer_configuration_is_valid_with_its_settings_and_refused_without(tmp_path):
    env = {"WEB1": "10.0.0.1:8000", "WEB2": "10.0.0.2:8000", "PUBLIC_HOST": "x", "HAPROXY_SOCKET": str(tmp_path / "s")}
    checked = haproxy_check(env)
    assert checked.returncode == 0, checked.stderr
    del env["WEB2"]
    checked = haproxy_check(env)
    assert checked.returncode != 0 and "'server' expects" in checked.stderr


def test_the_procfile_has_the_three_roles_and_no_worker_embeds_the_scheduler():
    """honcho's own reading of deploy/Procfile."""
    checked = subprocess.run(
        [sys.executable, "-m", "honcho", "-f", str(DEPLOY / "Procfile"), "check"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert "web, worker, beat" in checked.stderr + checked.stdout
    from honcho.environ import parse_procfile

    commands = parse_procfile((DEPLOY / "Procfile").read_text()).processes
    assert "--beat" not in commands["worker"] and " -B" not in commands["worker"]
    assert "celery -A marketing_agents beat" in commands["beat"]
