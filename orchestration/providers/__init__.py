from __future__ import annotations

from django.conf import settings

from orchestration.providers.base import Provider


def get_provider() -> Provider:
    if settings.AGENT_PROVIDER == "openai":
        from orchestration.providers.openai import OpenAIProvider

        return OpenAIProvider()
    from orchestration.providers.template import TemplateProvider

    return TemplateProvider()
