"""Runs the browser client's unit tests (realtime/tests/js/*.test.mjs) with node's test runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_client_js_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed for the browser client's tests (Debian package nodejs)")
    result = subprocess.run([node, "--test", str(HERE / "js")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout
