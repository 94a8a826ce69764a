"""Connections and subscriptions across every web process, from the keys each process's fan-out keeps in Redis."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from marketing_agents import redisconf
from realtime.fanout import PRESENCE_PREFIX


def presence_overview() -> dict[str, Any]:
    client = redisconf.client(redisconf.current(), socket_timeout=2)
    try:
        keys = sorted(client.scan_iter(match=PRESENCE_PREFIX + "*", count=500))
        values = client.mget(keys) if keys else []
    finally:
        client.close()
    processes = [json.loads(value) for value in values if value]
    campaigns: Counter[str] = Counter()
    for process in processes:
        campaigns.update(process.get("campaigns", {}))
    return {
        "processes": [
            {key: process[key] for key in ("process", "connections", "subscriptions", "updated_at")}
            for process in processes
        ],
        "connections": sum(p["connections"] for p in processes),
        "subscriptions": sum(p["subscriptions"] for p in processes),
        "campaigns": [{"campaign_id": cid, "subscribers": n} for cid, n in campaigns.most_common()],
    }
