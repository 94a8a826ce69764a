"""The database itself refuses duplicates, whichever code path tries to write them."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from campaigns.tests.factories import ArtifactFactory, AuditFactory, CampaignFactory, RunFactory
from eventlog.models import CampaignEvent
from orchestration.models import RunState

pytestmark = pytest.mark.django_db


def test_second_active_run_of_a_campaign_is_refused():
    run = RunFactory(state=RunState.GENERATING)
    with pytest.raises(IntegrityError), transaction.atomic():
        RunFactory(campaign=run.campaign, state=RunState.PENDING)


def test_a_new_run_may_start_once_the_previous_one_finished():
    run = RunFactory(state=RunState.COMPLETED)
    RunFactory(campaign=run.campaign, state=RunState.FAILED)
    assert RunFactory(campaign=run.campaign, state=RunState.PENDING).state == RunState.PENDING
    assert run.campaign.runs.count() == 3


def test_two_artifacts_of_one_type_and_version_in_one_run_are_refused():
    artifact = ArtifactFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        ArtifactFactory(run=artifact.run, type=artifact.type, version=artifact.version)
    assert artifact.run.artifacts.count() == 1


def test_two_events_with_one_sequence_are_refused():
    campaign = CampaignFactory()
    CampaignEvent.objects.create(campaign=campaign, sequence=1, event="progress", emitted_at=timezone.now())
    with pytest.raises(IntegrityError), transaction.atomic():
        CampaignEvent.objects.create(campaign=campaign, sequence=1, event="progress", emitted_at=timezone.now())


def test_event_sequence_starts_at_one():
    with pytest.raises(IntegrityError), transaction.atomic():
        CampaignEvent.objects.create(campaign=CampaignFactory(), sequence=0, event="x", emitted_at=timezone.now())


def test_audit_score_outside_0_to_100_is_refused():
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditFactory(score=101)


def test_one_audit_per_run():
    audit = AuditFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditFactory(run=audit.run)


def test_saving_a_stale_campaign_never_rewinds_its_event_sequence():
    from eventlog.publisher import publish

    campaign = CampaignFactory()
    stale = type(campaign).objects.get(pk=campaign.pk)
    publish(campaign, "progress", {"percentage": 1, "message": ""})
    stale.name = "Renamed while a run was publishing"
    stale.save()
    assert publish(campaign, "progress", {"percentage": 2, "message": ""}).sequence == 2
    campaign.refresh_from_db()
    assert (campaign.name, campaign.last_sequence) == ("Renamed while a run was publishing", 2)
