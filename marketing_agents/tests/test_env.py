"""Settings from the environment: good values are read, bad ones stop start-up with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from marketing_agents import env


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("true", True), ("YES", True), ("off", False), ("0", False), ("", False)]
)
def test_env_bool(monkeypatch, raw, expected):
    monkeypatch.setenv("FLAG", raw)
    assert env.env_bool("FLAG") is expected


def test_env_bool_refuses_nonsense(monkeypatch):
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="FLAG must be one of"):
        env.env_bool("FLAG")


def test_env_int_bounds(monkeypatch):
    monkeypatch.setenv("N", "70000")
    with pytest.raises(ImproperlyConfigured, match="N must be at most 65535"):
        env.env_int("N", 1, maximum=65535)
    monkeypatch.setenv("N", "-1")
    with pytest.raises(ImproperlyConfigured, match="at least 0"):
        env.env_int("N", 1, minimum=0)
    monkeypatch.setenv("N", "ten")
    with pytest.raises(ImproperlyConfigured, match="must be an integer"):
        env.env_int("N", 1)
    monkeypatch.delenv("N")
    assert env.env_int("N", 7) == 7


def test_env_choice_and_url(monkeypatch):
    monkeypatch.setenv("PROVIDER", "magic")
    with pytest.raises(ImproperlyConfigured, match="PROVIDER must be one of template, openai"):
        env.env_choice("PROVIDER", "template", ("template", "openai"))
    monkeypatch.setenv("URL", "ftp://user:secret@example.com")
    with pytest.raises(ImproperlyConfigured) as error:
        env.env_url("URL", "", schemes=("redis",))
    assert "secret" not in str(error.value)
    monkeypatch.setenv("URL", "redis://")
    with pytest.raises(ImproperlyConfigured, match="must name a host"):
        env.env_url("URL", "", schemes=("redis",))


def test_env_origins(monkeypatch):
    monkeypatch.setenv("ORIGINS", "https://app.example.com, http://localhost:3000/")
    assert env.env_origins("ORIGINS") == ["https://app.example.com", "http://localhost:3000"]
    for bad in ("*", "app.example.com", "https://app.example.com/path"):
        monkeypatch.setenv("ORIGINS", bad)
        with pytest.raises(ImproperlyConfigured, match="no wildcard"):
            env.env_origins("ORIGINS")


def manage_check(environ: dict[str, str]) -> subprocess.CompletedProcess:
    """``manage.py check`` in a fresh process with that environment: what start-up says of it."""
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DJANGO_DEBUG", "perhaps", "DJANGO_DEBUG must be one of"),
        ("PORT", "http", "PORT must be an integer"),
        ("AGENT_PROVIDER", "gpt", "AGENT_PROVIDER must be one of template, openai"),
        ("AGENT_CHUNK_DELAY_MS", "-5", "AGENT_CHUNK_DELAY_MS must be at least 0"),
        ("ALLOWED_ORIGINS", "*", "ALLOWED_ORIGINS must list origins"),
        ("DATABASE_URL", "mysql://u:hunter2@db/x", "DATABASE_URL must be a URL with scheme"),
        ("SECRET_KEY", "short", "SECRET_KEY must be at least 32 characters"),
    ],
)
def test_bad_environment_stops_start_up_with_a_clear_message(variable, value, message):
    result = manage_check({**os.environ, variable: value})
    assert result.returncode != 0
    assert message in result.stderr
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    "variable",
    [
        # Several hosts would each generate a key and refuse each other's tokens (docs/DEPLOY.md).
        "SECRET_KEY",
        # Each host would use a Redis of its own: a worker's events would reach only its host's web processes.
        "REDIS_URL",
    ],
)
def test_a_shared_database_without_a_shared_setting_in_the_environment_stops_start_up(variable):
    environ = {k: v for k, v in os.environ.items() if k != variable}
    environ["DATABASE_URL"] = "postgres://app:hunter2@db.internal:5432/marketing_agents"
    result = manage_check(environ)
    assert result.returncode != 0
    assert f"{variable} must be set in the environment when DATABASE_URL names a shared database" in result.stderr
    assert "hunter2" not in result.stderr


def test_sqlite_without_a_secret_key_keeps_the_generated_one():
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL")}
    result = manage_check(environ)
    assert result.returncode == 0, result.stderr
