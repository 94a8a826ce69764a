from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command


@pytest.mark.django_db
def test_ensure_operator_creates_one_superuser_once(settings, tmp_path):
    settings.RUN_DIR = tmp_path
    out = StringIO()
    call_command("ensure_operator", stdout=out)
    credentials = (tmp_path / "operator-credentials").read_text().split()
    assert credentials[0] == "admin"
    assert f"Created operator account admin with password {credentials[1]}" in out.getvalue()
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.check_password(credentials[1])

    again = StringIO()
    call_command("ensure_operator", stdout=again)
    assert credentials[1] not in again.getvalue()
    assert "Operator account: admin" in again.getvalue()
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


@pytest.mark.django_db
def test_ensure_operator_uses_the_given_password_without_printing_it(settings, tmp_path, monkeypatch):
    settings.RUN_DIR = tmp_path
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ops")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-given-password")
    out = StringIO()
    call_command("ensure_operator", stdout=out)
    assert "a-long-given-password" not in out.getvalue()
    assert get_user_model().objects.get(username="ops").check_password("a-long-given-password")
    assert not (tmp_path / "operator-credentials").exists()
