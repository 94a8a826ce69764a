"""The one publisher: sequences 1..N without gap or duplicate, stored before sent, sent after commit."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, connections, transaction

from campaigns.models import Campaign
from campaigns.tests.factories import CampaignFactory, RunFactory
from eventlog import layer
from eventlog.models import CampaignEvent
from eventlog.publisher import group_name, publish, publish_transient

BASE_DIR = Path(settings.BASE_DIR)


def sequences(campaign: Campaign) -> list[int]:
    return list(CampaignEvent.objects.filter(campaign=campaign).order_by("sequence").values_list("sequence", flat=True))


@pytest.fixture
def listener():
    """A channel in the campaign's group on the real realtime layer; returns (join, receive).

    A reader task drains the channel into a thread-safe queue: cancelling a pub/sub receive
    would unsubscribe the channel, so the test never times out on the layer itself."""
    channel_layer = get_channel_layer("realtime")
    joined: list[tuple[str, str, asyncio.Task]] = []

    def join(campaign: Campaign) -> queue.Queue:
        inbox: queue.Queue = queue.Queue()

        async def start():
            channel = await channel_layer.new_channel()
            await channel_layer.group_add(group_name(campaign.public_id), channel)

            async def read():
                while True:
                    inbox.put(await channel_layer.receive(channel))

            return channel, asyncio.ensure_future(read())

        channel, task = layer.run_sync(start())
        joined.append((group_name(campaign.public_id), channel, task))
        return inbox

    def receive(inbox: queue.Queue, timeout: float = 2.0) -> dict | None:
        try:
            return inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    yield join, receive

    async def leave():
        for group, channel, task in joined:
            task.cancel()
            await channel_layer.group_discard(group, channel)

    layer.run_sync(leave())


@pytest.mark.django_db
def test_sequences_start_at_one_and_increase_by_one():
    campaign = CampaignFactory()
    events = [publish(campaign, "progress", {"percentage": i, "message": "working"}) for i in range(5)]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    campaign.refresh_from_db()
    assert campaign.last_sequence == 5


@pytest.mark.django_db
def test_sequences_are_per_campaign():
    first, second = CampaignFactory(), CampaignFactory()
    publish(first, "progress", {"percentage": 1, "message": ""})
    publish(first, "progress", {"percentage": 2, "message": ""})
    assert publish(second, "progress", {"percentage": 1, "message": ""}).sequence == 1


@pytest.mark.django_db
def test_stored_data_is_plain_json():
    from decimal import Decimal

    event = publish(
        CampaignFactory(), "usage.updated", {"prompt_tokens": 3, "completion_tokens": 4, "cost": Decimal("0.25")}
    )
    event.refresh_from_db()
    assert event.data == {"prompt_tokens": 3, "completion_tokens": 4, "cost": "0.25"}


@pytest.mark.django_db
def test_data_must_be_an_object():
    with pytest.raises(TypeError):
        publish(CampaignFactory(), "progress", ["not", "a", "dict"])


@pytest.mark.django_db(transaction=True)
def test_event_reaches_the_group_after_commit(listener):
    join, receive = listener
    campaign = CampaignFactory()
    run = RunFactory(campaign=campaign)
    channel = join(campaign)
    with transaction.atomic():
        publish(campaign, "campaign.started", {"run_id": run.public_id, "plan": ["Copy"]}, run_id=run.public_id)
        assert receive(channel, timeout=0.3) is None, "sent before the transaction committed"
    message = receive(channel)
    assert message["type"] == "campaign.event"
    assert message["sequence"] == 1
    frame = json.loads(message["frame"])
    assert frame == {
        "type": "event",
        "event": "campaign.started",
        "campaign_id": campaign.public_id,
        "run_id": run.public_id,
        "sequence": 1,
        "emitted_at": frame["emitted_at"],
        "data": {"run_id": run.public_id, "plan": ["Copy"]},
    }
    assert frame["emitted_at"].endswith("Z")


@pytest.mark.django_db(transaction=True)
def test_rolled_back_event_is_neither_stored_nor_sent_and_its_sequence_is_reused(listener):
    join, receive = listener
    campaign = CampaignFactory()
    channel = join(campaign)
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(campaign, "progress", {"percentage": 5, "message": "x"})
        raise RuntimeError("the state change failed")
    assert receive(channel, timeout=0.3) is None
    assert sequences(campaign) == []
    assert publish(campaign, "progress", {"percentage": 5, "message": "x"}).sequence == 1
    assert json.loads(receive(channel)["frame"])["sequence"] == 1


@pytest.mark.django_db(transaction=True)
def test_transient_event_is_sent_with_after_sequence_and_not_stored(listener):
    join, receive = listener
    campaign = CampaignFactory()
    channel = join(campaign)
    publish(campaign, "step.started", {"step": "Copy", "agent": "copywriter", "attempt": 1})
    receive(channel)
    data = {"artifact_type": "Copy", "chunk": "Meet ", "chunk_index": 0, "is_complete": False}
    publish_transient(campaign, "artifact.chunk", data)
    frame = json.loads(receive(channel)["frame"])
    assert frame["event"] == "artifact.chunk"
    assert frame["after_sequence"] == 1
    assert "sequence" not in frame
    assert frame["data"] == data
    assert sequences(campaign) == [1]


@pytest.mark.django_db(transaction=True)
def test_publisher_survives_an_unreachable_channel_layer(settings):
    campaign = CampaignFactory()
    unreachable = {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}
    settings.CHANNEL_LAYERS = {"default": unreachable, "realtime": unreachable}
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    try:
        event = publish(campaign, "progress", {"percentage": 1, "message": "stored anyway"})
    finally:
        channel_layers.backends.clear()
    assert event.sequence == 1
    assert sequences(campaign) == [1]


@pytest.mark.django_db(transaction=True)
def test_concurrent_publishers_in_threads_produce_one_to_n():
    campaign = CampaignFactory()
    threads, per_thread, errors = 8, 25, []

    def work() -> None:
        try:
            for i in range(per_thread):
                publish(campaign, "progress", {"percentage": i, "message": threading.current_thread().name})
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []
    assert sequences(campaign) == list(range(1, threads * per_thread + 1))


PUBLISH_SCRIPT = """
import django, sys
django.setup()
from campaigns.models import Campaign
from eventlog.publisher import publish
campaign = Campaign.objects.get(pk=int(sys.argv[1]))
for i in range(int(sys.argv[2])):
    publish(campaign, "progress", {"percentage": i, "message": "from another process"})
"""


@pytest.mark.django_db(transaction=True)
def test_concurrent_publishers_in_processes_produce_one_to_n():
    assert connection.vendor == "postgresql", "make test runs this against PostgreSQL"
    campaign = CampaignFactory()
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "marketing_agents.settings"}
    processes, per_process = 4, 40
    children = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISH_SCRIPT, str(campaign.pk), str(per_process)], cwd=BASE_DIR, env=env
        )
        for _ in range(processes)
    ]
    assert [child.wait(120) for child in children] == [0] * processes
    assert sequences(campaign) == list(range(1, processes * per_process + 1))


SQLITE_SETUP = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from campaigns.tests.factories import CampaignFactory
print(CampaignFactory().pk)
"""

SQLITE_COUNT = """
import django
django.setup()
from eventlog.models import CampaignEvent
print(",".join(str(s) for s in CampaignEvent.objects.order_by("sequence").values_list("sequence", flat=True)))
"""


def test_concurrent_publishers_in_processes_on_sqlite(tmp_path):
    """The embedded default: WAL and IMMEDIATE transactions keep concurrent writers correct."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "marketing_agents.settings",
    }

    def run(code: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, text=True
        )

    setup = run(SQLITE_SETUP)
    campaign_pk = setup.communicate(timeout=120)[0].strip()
    assert setup.returncode == 0
    processes, per_process = 4, 30
    children = [run(PUBLISH_SCRIPT, campaign_pk, str(per_process)) for _ in range(processes)]
    assert [child.wait(120) for child in children] == [0] * processes
    result = run(SQLITE_COUNT)
    found = result.communicate(timeout=60)[0].strip()
    assert found == ",".join(str(n) for n in range(1, processes * per_process + 1))


@pytest.mark.django_db
def test_pruning_removes_only_events_older_than_the_retention(settings):
    from datetime import timedelta

    from django.utils import timezone

    from eventlog.services import events_prune
    from eventlog.tasks import prune_events

    settings.EVENT_RETENTION_DAYS = 30
    campaign = CampaignFactory()
    old, kept = (publish(campaign, "progress", {"percentage": i, "message": ""}) for i in (1, 2))
    CampaignEvent.objects.filter(pk=old.pk).update(emitted_at=timezone.now() - timedelta(days=31))
    assert events_prune() == 1
    assert sequences(campaign) == [2]
    assert prune_events() == 0
    assert publish(campaign, "progress", {"percentage": 3, "message": ""}).sequence == 3, "never reused"
