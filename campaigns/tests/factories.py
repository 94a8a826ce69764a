from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from campaigns.models import Artifact, Campaign, ComplianceAudit, OrchestrationRun, RunState

PASSWORD = "correct-horse-battery-staple"

DEFAULT_PLAN = [
    {"step": "Copy", "agent": "copywriter", "status": "pending", "attempt": 0},
    {"step": "ShortCopy", "agent": "short_copywriter", "status": "pending", "attempt": 0},
    {"step": "Visual", "agent": "visual_designer", "status": "pending", "attempt": 0},
    {"step": "audit", "agent": "compliance_auditor", "status": "pending", "attempt": 0},
]


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Spring launch {n}")
    brief = "Launch our reusable water bottle to commuters who care about the planet."
    audience = "urban commuters aged 25-40"
    tone = "friendly"


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OrchestrationRun

    campaign = factory.SubFactory(CampaignFactory)
    state = RunState.PENDING
    plan = factory.LazyFunction(lambda: [dict(step) for step in DEFAULT_PLAN])


class ArtifactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Artifact

    run = factory.SubFactory(RunFactory)
    campaign = factory.LazyAttribute(lambda artifact: artifact.run.campaign)
    type = "Copy"
    content = "Meet the bottle that keeps up with your commute."
    agent_name = "copywriter"
    version = 1


class AuditFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ComplianceAudit

    run = factory.SubFactory(RunFactory)
    campaign = factory.LazyAttribute(lambda audit: audit.run.campaign)
    score = 92
    is_compliant = True
    issues = factory.LazyFunction(list)
    feedback = "Clear and compliant."
