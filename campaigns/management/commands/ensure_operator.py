"""Make sure an operator (superuser) account exists and say how to log in."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the operator account 'admin' if there is no superuser, and print how to log in."

    def handle(self, *args: object, **options: object) -> None:
        User = get_user_model()
        credentials = Path(settings.RUN_DIR) / "operator-credentials"
        existing = User.objects.filter(is_superuser=True).order_by("id").first()
        if existing is not None:
            where = f" (password in {credentials})" if credentials.exists() else ""
            self.stdout.write(f"Operator account: {existing.get_username()}{where}. Log in at /admin/.")
            return
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME") or "admin"
        given = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        password = given or secrets.token_urlsafe(12)
        User.objects.create_superuser(username, os.environ.get("DJANGO_SUPERUSER_EMAIL", ""), password)
        if given:
            self.stdout.write(f"Created operator account {username} with the password from DJANGO_SUPERUSER_PASSWORD.")
            return
        credentials.parent.mkdir(exist_ok=True)
        credentials.touch(mode=0o600)
        credentials.write_text(f"{username}\n{password}\n")
        self.stdout.write(
            f"Created operator account {username} with password {password}\n"
            f"(kept in {credentials}; change it at /admin/password_change/). Log in at /admin/."
        )
