"""Many sockets re-attaching at once (a web process died and its clients all came back here): their
reads are batched (marketing_agents/batching.py), and each still gets exactly its own answer."""

from __future__ import annotations

import asyncio

import pytest

from campaigns.tests.factories import CampaignFactory
from realtime.tests.sockets import db, publish_progress, receive_events, recv, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


async def test_sockets_resuming_at_once_from_different_places_each_get_exactly_what_they_missed(ws, users):
    alice = users["alice"]
    campaigns = [await db(CampaignFactory)(owner=alice) for _ in range(3)]
    for index, campaign in enumerate(campaigns):
        await publish_progress(campaign, *range(10 + index))
    # 24 of alice's sockets, resuming the three campaigns from 0 to 7, all at the same moment.
    plan = [(campaigns[n % 3], n % 8) for n in range(24)]
    sockets = await asyncio.gather(*(ws(alice) for _ in plan))
    answers = await asyncio.gather(
        *(subscribe(comm, campaign, last_sequence=after) for comm, (campaign, after) in zip(sockets, plan, strict=True))
    )
    for answer, (campaign, _) in zip(answers, plan, strict=True):
        assert answer["last_sequence"] == 10 + campaigns.index(campaign)
    for comm, (campaign, after) in zip(sockets, plan, strict=True):
        missed = 10 + campaigns.index(campaign) - after
        frames = await receive_events(comm, missed)
        assert [frame["sequence"] for frame in frames] == list(range(after + 1, after + 1 + missed))
        assert all(frame["replayed"] and frame["campaign_id"] == campaign.public_id for frame in frames)


async def test_in_the_same_storm_another_user_is_refused_the_campaigns_alice_is_given(ws, users):
    alice, bob = users["alice"], users["bob"]
    campaign = await db(CampaignFactory)(owner=alice)
    await publish_progress(campaign, 1, 2)
    sockets = await asyncio.gather(*(ws(user) for user in [alice, bob] * 10))
    for comm in sockets:
        await comm.send_json_to({"type": "subscribe", "campaign_id": campaign.public_id, "last_sequence": 0})
    answers = [await recv(comm) for comm in sockets]
    assert [answer["type"] for answer in answers] == ["subscribed", "error"] * 10
    assert {answer["code"] for answer in answers[1::2]} == {"not_found"}


async def test_two_sockets_of_one_user_with_different_rights_are_each_answered_by_their_own(ws, users):
    """A socket keeps the rights its user had when it opened. One opened while alice was staff and one
    opened after she lost it ask for bob's campaign in the same batch: only the first may see it."""
    alice, bob = users["alice"], users["bob"]
    campaign = await db(CampaignFactory)(owner=bob)
    alice.is_staff = True
    await db(alice.save)()
    as_staff = await ws(alice)
    alice.is_staff = False
    await db(alice.save)()
    as_herself = await ws(alice)
    for comm in (as_staff, as_herself):
        await comm.send_json_to({"type": "subscribe", "campaign_id": campaign.public_id})
    assert (await recv(as_staff))["type"] == "subscribed"
    assert (await recv(as_herself))["code"] == "not_found"
