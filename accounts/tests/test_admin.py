"""Operators in the admin: API keys made (shown once) and revoked, budgets set, spend read-only."""

from __future__ import annotations

from django.contrib.messages import get_messages

from accounts.models import Account, ApiKey, MonthlySpend
from accounts.services import api_key_create, spend_record


def test_an_operator_makes_a_key_for_a_user_and_sees_it_once(operator_client, alice):
    answer = operator_client.post("/admin/accounts/apikey/add/", {"name": "for alice", "user": alice.pk})
    assert answer.status_code == 302
    key = ApiKey.objects.get(user=alice)
    [message] = [str(m) for m in get_messages(answer.wsgi_request) if "The API key for" in str(m)]
    secret = message.split("is: ")[1].split(". Please")[0]
    assert secret.startswith(f"{key.prefix}.") and ApiKey.objects.get_from_key(secret) == key
    first = operator_client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    assert secret in first, "the message shows it on the next page"
    again = operator_client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    assert secret.split(".")[1] not in again, "and never again"


def test_an_operator_revokes_keys_in_bulk(operator_client, alice, bob):
    keys = [api_key_create(user_id=user.pk, name="k")[0] for user in (alice, bob)]
    answer = operator_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke", "_selected_action": [k.pk for k in keys]},
        follow=True,
    )
    assert answer.status_code == 200 and "Revoked 2 key(s)." in answer.content.decode()
    assert set(ApiKey.objects.values_list("revoked", flat=True)) == {True}


def test_one_api_keys_page_budgets_editable_spend_read_only(operator_client, alice):
    index = operator_client.get("/admin/").content.decode()
    assert index.count(">API keys<") == 1
    spend_record(user_id=alice.pk, cost=1)
    row = MonthlySpend.objects.get(user=alice)
    assert operator_client.post(f"/admin/accounts/monthlyspend/{row.pk}/change/", {"spend": "0"}).status_code == 403
    answer = operator_client.post("/admin/accounts/account/add/", {"user": alice.pk, "monthly_budget": "12.5"})
    assert answer.status_code == 302
    assert str(Account.objects.get(user=alice).monthly_budget) == "12.500000"


def test_an_operators_change_is_announced_on_the_ops_stream_without_its_value(operator_client, alice):
    from eventlog.models import StreamEvent

    account = Account.objects.create(user=alice, monthly_budget=5)
    answer = operator_client.post(
        f"/admin/accounts/account/{account.pk}/change/", {"user": alice.pk, "monthly_budget": "777.5"}
    )
    assert answer.status_code == 302
    [changed] = StreamEvent.objects.filter(stream__kind="ops", event="config.changed")
    assert changed.data == {"setting": "account account of alice: monthly_budget", "by": "charlie"}
    assert "777" not in str(changed.data)
