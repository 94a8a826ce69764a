from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """What a user's account holds beyond Django's user: the monthly budget, the spend rolled up per
    month, and the account stream's events (PROTOCOL.md §11). It sits above the event log (it
    publishes to it) and below orchestration (which reports usage and run lifecycles to it)."""

    name = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"
