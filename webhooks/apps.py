from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Signed webhooks (PROTOCOL.md §12): a user's campaign and account events POSTed to their URLs,
    in order per webhook, at least once, with retries. It follows the event log through the
    publisher's listeners (the log does not import it) and reports on the owner's account stream."""

    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from eventlog import publisher
        from webhooks.services import on_event

        if on_event not in publisher.listeners:
            publisher.listeners.append(on_event)
