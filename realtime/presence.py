"""Connections and subscriptions across every web process, from the keys each process's fan-out keeps in Redis."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from marketing_agents import redisconf
from realtime.fanout import PRESENCE_PREFIX

TOP_USERS = 20


def presence_overview() -> dict[str, Any]:
    client = redisconf.client(redisconf.current(), socket_timeout=2)
    try:
        keys = sorted(client.scan_iter(match=PRESENCE_PREFIX + "*", count=500))
        values = client.mget(keys) if keys else []
    finally:
        client.close()
    processes = [json.loads(value) for value in values if value]
    campaigns: Counter[str] = Counter()
    users: Counter[int] = Counter()
    for process in processes:
        campaigns.update(process.get("campaigns", {}))
        users.update({int(user_id): n for user_id, n in process.get("users", {}).items()})
    return {
        "processes": [
            {
                **{key: process[key] for key in ("process", "connections", "subscriptions", "updated_at")},
                "refused": process.get("refused", 0),
            }
            for process in processes
        ],
        "connections": sum(p["connections"] for p in processes),
        "subscriptions": sum(p["subscriptions"] for p in processes),
        "campaigns": [{"campaign_id": cid, "subscribers": n} for cid, n in campaigns.most_common()],
        "connection_caps": {
            "per_user": settings.WS_MAX_CONNECTIONS_PER_USER or None,
            "staff": settings.WS_STAFF_MAX_CONNECTIONS_PER_USER or None,
        },
        "top_users": top_users(users),
        # Since each live process started (a process that is gone takes its count with it).
        "connections_refused": sum(p.get("refused", 0) for p in processes),
    }


def top_users(users: Counter[int]) -> list[dict[str, Any]]:
    """The users holding the most connections, with the cap each one has (None: not capped)."""
    top = users.most_common(TOP_USERS)
    found = {
        pk: (username, is_staff)
        for pk, username, is_staff in get_user_model()
        .objects.filter(pk__in=[user_id for user_id, _ in top])
        .values_list("pk", "username", "is_staff")
    }
    rows = []
    for user_id, connections in top:
        username, is_staff = found.get(user_id, (None, False))  # deleted since it connected
        cap = settings.WS_STAFF_MAX_CONNECTIONS_PER_USER if is_staff else settings.WS_MAX_CONNECTIONS_PER_USER
        rows.append({"user_id": user_id, "username": username, "connections": connections, "cap": cap or None})
    return rows
