"""Who may open the native socket (realtime/middleware.py and the consumer's handshake): tokens,
sessions, deactivated and deleted users, and the Origin check.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.test import Client
from rest_framework_simplejwt.tokens import RefreshToken

from campaigns.tests.factories import CampaignFactory, RunFactory
from orchestration.models import OrchestrationRun
from realtime.tests.sockets import (
    assert_clean_error,
    assert_usable,
    db,
    drain,
    expect_close,
    expect_error,
    expect_silence,
    publish_progress,
    recv,
    refused,
    subscribe,
    token_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


# --- authentication -----------------------------------------------------------------------------------------


async def test_access_token_query_parameter_authenticates(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws(users["alice"])
    answer = await subscribe(comm, campaign, request_id="r1")
    assert answer == {"type": "subscribed", "campaign_id": campaign.public_id, "last_sequence": 0, "request_id": "r1"}
    await assert_usable(comm)


async def test_authorization_bearer_header_authenticates(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    token = token_for(users["alice"])
    comm = await ws(headers=[(b"authorization", f"Bearer {token}".encode())])
    await subscribe(comm, campaign)
    await assert_usable(comm)


async def test_session_cookie_authenticates(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])

    def login() -> str:
        client = Client()
        client.force_login(users["alice"])
        return client.cookies["sessionid"].value

    session_key = await db(login)()
    comm = await ws(headers=[(b"cookie", f"csrftoken=abc; sessionid={session_key}".encode())])
    await subscribe(comm, campaign)
    await assert_usable(comm)


async def test_unknown_session_cookie_is_unauthenticated(ws, users):
    comm = await ws(headers=[(b"cookie", b"sessionid=not-a-session")])
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


async def test_no_credentials_accepted_then_unauthenticated_and_4401(ws, users):
    comm = await ws()
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


async def test_frames_of_an_unauthenticated_connection_are_not_answered(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    comm = await ws()
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)
    await comm.send_json_to({"type": "subscribe", "campaign_id": campaign.public_id})
    await comm.send_json_to({"type": "ping"})
    await expect_silence(comm)


async def test_garbage_token_is_unauthenticated(ws, users):
    comm = await ws(token="not.a.jwt")
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


async def test_garbage_bearer_header_is_unauthenticated(ws, users):
    comm = await ws(headers=[(b"authorization", b"Bearer garbage")])
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


async def test_refresh_token_is_not_an_access_token(ws, users):
    refresh = str(RefreshToken.for_user(users["alice"]))
    comm = await ws(token=refresh)
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


async def test_expired_token_is_token_expired(ws, users):
    comm = await ws(token=token_for(users["alice"], lifetime=-timedelta(minutes=5)))
    await expect_error(comm, "token_expired")
    await expect_close(comm, 4401)


async def test_token_expiring_during_the_connection_closes_it(ws, users):
    campaign = await db(CampaignFactory)(owner=users["alice"])
    # exp is whole seconds (truncated), so a 2 s lifetime ends 1-2 s from now: never before the handshake.
    comm = await ws(token=token_for(users["alice"], lifetime=timedelta(seconds=2)))
    await subscribe(comm, campaign)
    await assert_usable(comm)
    started = time.monotonic()
    frame = await recv(comm, timeout=5)
    assert_clean_error(frame, "token_expired")
    assert time.monotonic() - started < 3
    await expect_close(comm, 4401)


async def test_a_connection_whose_token_expired_executes_no_more_commands(ws, users):
    """After token_expired and the close, frames still in flight (the close handshake takes a moment,
    and autobahn keeps delivering frames while closing) must not act with the expired credential."""
    campaign = await db(CampaignFactory)(owner=users["alice"])
    run = await db(RunFactory)(campaign=campaign, state="generating")
    comm = await ws(token=token_for(users["alice"], lifetime=timedelta(seconds=2)))
    await subscribe(comm, campaign)
    await expect_error(comm, "token_expired")
    await expect_close(comm, 4401)
    await comm.send_json_to({"type": "cancel", "run_id": run.public_id})
    await comm.send_json_to({"type": "ping"})
    await publish_progress(campaign, 1)
    after_close = await drain(comm)
    state = (await db(OrchestrationRun.objects.get)(pk=run.pk)).state
    assert (state, after_close) == ("generating", [])


async def test_deactivated_users_token_is_unauthenticated(ws, users):
    alice = users["alice"]
    token = token_for(alice)
    alice.is_active = False
    await db(alice.save)()
    comm = await ws(token=token)
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


async def test_token_of_a_deleted_user_is_unauthenticated(ws, users):
    token = token_for(users["bob"])
    await db(users["bob"].delete)()
    comm = await ws(token=token)
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)


# --- origin -------------------------------------------------------------------------------------------------


async def test_foreign_origin_is_refused_with_403(ws, users):
    headers = [(b"origin", b"https://evil.example"), (b"host", b"testserver")]
    assert await refused(token_for(users["alice"]), headers) == (False, 403)


@pytest.mark.parametrize(
    "origin",
    [b"http://testserver:8080", b"null", b"http://testserver.evil.example", b"ftp://testserver", b"testserver"],
)
async def test_near_misses_of_the_own_origin_are_refused(ws, users, origin):
    headers = [(b"origin", origin), (b"host", b"testserver")]
    assert await refused(token_for(users["alice"]), headers) == (False, 403)


@pytest.mark.parametrize("origin", [b"http://testserver", b"https://testserver", b"http://testserver/"])
async def test_same_origin_is_accepted(ws, users, origin):
    comm = await ws(users["alice"], headers=[(b"origin", origin), (b"host", b"testserver")])
    await assert_usable(comm)


async def test_same_origin_with_port_is_accepted(ws, users):
    comm = await ws(users["alice"], headers=[(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")])
    await assert_usable(comm)


async def test_origin_in_allowed_origins_is_accepted(ws, users, settings):
    settings.ALLOWED_ORIGINS = ["https://app.example.com"]
    comm = await ws(users["alice"], headers=[(b"origin", b"https://app.example.com"), (b"host", b"api.example.com")])
    await assert_usable(comm)
    headers = [(b"origin", b"https://other.example.com"), (b"host", b"api.example.com")]
    assert await refused(token_for(users["alice"]), headers) == (False, 403)


async def test_no_origin_is_accepted(ws, users):
    comm = await ws(users["alice"], headers=[(b"host", b"testserver")])
    await assert_usable(comm)


async def test_allowed_origin_without_credentials_is_still_unauthenticated(ws, users):
    comm = await ws(headers=[(b"origin", b"http://testserver"), (b"host", b"testserver")])
    await expect_error(comm, "unauthenticated")
    await expect_close(comm, 4401)
