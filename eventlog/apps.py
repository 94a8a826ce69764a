from django.apps import AppConfig


class EventlogConfig(AppConfig):
    """The campaign event log: stored, numbered per campaign, sent through the channel layer.

    It knows nothing of orchestration or sockets: ``orchestration`` publishes to it, ``realtime``
    reads it and serves it to clients (docs/ARCHITECTURE.md)."""

    name = "eventlog"
    default_auto_field = "django.db.models.BigAutoField"
