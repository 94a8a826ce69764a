from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from campaigns.models import Campaign
from orchestration.models import Artifact, ComplianceAudit, OrchestrationRun, RunState, RunStep
from orchestration.plan import FULL_PLAN, STEP_AGENTS

PASSWORD = "correct-horse-battery-staple"

DEFAULT_PLAN = [(name, STEP_AGENTS[name]) for name in FULL_PLAN]


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
        skip_postgeneration_save = True

    campaign = factory.SubFactory(CampaignFactory)
    state = RunState.PENDING
    plan = factory.LazyFunction(lambda: [name for name, _ in DEFAULT_PLAN])

    @factory.post_generation
    def steps(run, create, extracted, **kwargs):
        """``steps="completed"`` marks every step; ``steps={"Copy": "completed"}`` some of them."""
        if not create:
            return
        statuses = (
            extracted if isinstance(extracted, dict) else {name: extracted or "pending" for name, _ in DEFAULT_PLAN}
        )
        for position, (name, agent) in enumerate(DEFAULT_PLAN):
            RunStep.objects.create(
                run=run, name=name, agent=agent, position=position, status=statuses.get(name, "pending")
            )


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
