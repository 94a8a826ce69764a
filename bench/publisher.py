"""Publisher: E events/s round-robin over the given campaigns for D seconds, through eventlog.publisher.publish
(the same path as the Celery workers: stored, numbered, sent after commit). Prints one JSON line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketing_agents.settings")

import django  # noqa: E402

django.setup()

from django.db import connections  # noqa: E402

from campaigns.models import Campaign  # noqa: E402
from eventlog.publisher import publish  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--campaigns", required=True)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--threads", type=int, default=5)
    parser.add_argument("--pad", type=int, default=120, help="bytes of padding in each event's data")
    args = parser.parse_args()
    campaigns = list(Campaign.objects.filter(public_id__in=args.campaigns.split(",")))
    total = int(args.rate * args.duration)
    counts: dict[str, int] = {c.public_id: 0 for c in campaigns}
    pad = "x" * args.pad

    def one(k: int) -> None:
        campaign = campaigns[k % len(campaigns)]
        publish(campaign, "progress", {"percentage": k % 100, "message": pad})

    # With a thread count that divides the number of campaigns, each campaign stays on one thread.
    start = time.time() + 0.05
    late = 0

    def lane(lane_index: int) -> int:
        nonlocal late
        sent = 0
        for k in range(lane_index, total, args.threads):
            target = start + k / args.rate
            delay = target - time.time()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.005:
                late += 1
            one(k)
            sent += 1
        connections.close_all()
        return sent

    with ThreadPoolExecutor(args.threads) as pool:
        sent = sum(pool.map(lane, range(args.threads)))
    end = time.time()
    for k in range(total):
        counts[campaigns[k % len(campaigns)].public_id] += 1
    print(
        json.dumps(
            {
                "sent": sent,
                "rate_achieved": round(sent / (end - start), 1),
                "late": late,
                "window": [start, end],
                "counts": counts,
            }
        )
    )


if __name__ == "__main__":
    main()
