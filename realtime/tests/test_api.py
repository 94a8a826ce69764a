"""The realtime REST endpoints (realtime/api.py): notices, the operators' presence view."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rest_framework.test import APIClient

from campaigns.tests.factories import CampaignFactory
from realtime.fanout import get_fanout
from realtime.tests.sockets import (
    assert_usable,
    db,
    expect_silence,
    recv,
    subscribe,
)

pytestmark = pytest.mark.django_db(transaction=True)


# --- REST ---------------------------------------------------------------------------------------------------


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


async def test_post_notice_as_staff_reaches_clients(ws, users):
    alice, bob = await ws(users["alice"]), await ws(users["bob"])
    await assert_usable(alice)
    await assert_usable(bob)
    response = await db(api_for(users["operator"]).post)(
        "/api/notices/", {"level": "critical", "message": "  Deploy in 5 minutes  "}, format="json"
    )
    assert response.status_code == 202, response.content
    assert response.json()["level"] == "critical"
    for comm in (alice, bob):
        frame = await recv(comm)
        assert frame["type"] == "system.notice"
        assert frame["level"] == "critical"
        assert frame["message"] == "Deploy in 5 minutes"


async def test_post_notice_as_non_staff_is_403_and_sends_nothing(ws, users):
    alice = await ws(users["alice"])
    await assert_usable(alice)
    response = await db(api_for(users["bob"]).post)("/api/notices/", {"level": "info", "message": "hi"}, format="json")
    assert response.status_code == 403
    anonymous = await db(APIClient().post)("/api/notices/", {"level": "info", "message": "hi"}, format="json")
    assert anonymous.status_code == 401
    await expect_silence(alice)


@pytest.mark.parametrize(
    "body",
    [
        {"level": "panic", "message": "x"},
        {"level": "info"},
        {"message": "x"},
        {"level": "info", "message": ""},
        {"level": "info", "message": "x" * 1001},
        {"level": 1, "message": "x"},
        {"level": "info", "message": "   "},
        {"level": "info", "message": "a\x00b"},
    ],
)
def test_post_notice_with_a_bad_body_is_400(users, body):
    response = api_for(users["operator"]).post("/api/notices/", body, format="json")
    assert response.status_code == 400, response.content


async def test_ops_realtime_for_staff(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    await subscribe(comm, campaign)
    process_id = get_fanout().process_id
    overview: dict[str, Any] = {}
    for _ in range(50):
        response = await db(api_for(users["operator"]).get)("/api/ops/realtime/")
        assert response.status_code == 200
        overview = response.json()
        if any(p["process"] == process_id for p in overview["processes"]):
            break
        await asyncio.sleep(0.1)
    assert {"processes", "connections", "campaigns"} <= set(overview)
    assert isinstance(overview["connections"], int) and overview["connections"] >= 1
    assert isinstance(overview["campaigns"], list)
    mine = [p for p in overview["processes"] if p["process"] == process_id]
    assert mine, overview
    assert {"process", "connections", "subscriptions", "updated_at"} <= set(mine[0])


def test_ops_realtime_is_staff_only(users):
    assert api_for(users["alice"]).get("/api/ops/realtime/").status_code == 403
    assert APIClient().get("/api/ops/realtime/").status_code == 401
