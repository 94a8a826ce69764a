"""Start a run of a campaign and, with --follow, print its events live until it ends."""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns.errors import ServiceError
from campaigns.models import Campaign
from eventlog.models import CampaignEvent
from eventlog.reads import EVENTS_MAX_LIMIT, campaign_events
from orchestration import services
from orchestration.models import OrchestrationRun

ENDINGS = {"campaign.completed": 0, "generation.failed": 1, "run.cancelled": 2}
TIMED_OUT = 3
BAR_WIDTH = 30


def describe(event: CampaignEvent) -> str:
    data = event.data
    match event.event:
        case "orchestration.state_changed":
            return f"state {data.get('previous_state') or '-'} -> {data['state']}"
        case "step.started" | "step.completed":
            took = f", {data['duration_ms']} ms" if "duration_ms" in data else ""
            return f"{data['step']} ({data['agent']}, attempt {data['attempt']}{took})"
        case "agent.thought":
            return f"{data['agent']}: {data['thought']}"
        case "artifact.generated":
            artifact = data["artifact"]
            size = len(artifact["content"])
            return f"{artifact['type']} v{artifact['version']} by {artifact['agent_name']} ({size} chars)"
        case "compliance.completed":
            verdict = "compliant" if data["is_compliant"] else "not compliant"
            return f"{verdict}, score {data['compliance_score']}, {len(data['issues'])} issue(s)"
        case "usage.updated":
            return f"{data['prompt_tokens']} prompt + {data['completion_tokens']} completion tokens, ${data['cost']}"
        case "generation.failed":
            return f"{data['error_message']} (step {data['step']}, {data['attempts']} attempt(s))"
        case _:
            return ", ".join(f"{key}={value}" for key, value in data.items())


def bar(percentage: int, message: str) -> str:
    filled = round(BAR_WIDTH * percentage / 100)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percentage:3d}% {message}"


class Command(BaseCommand):
    help = "Start a run of CAMPAIGN_ID; with --follow, print its events live until it completes, fails or is cancelled."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign_id", help="The campaign's id, camp_…")
        parser.add_argument("--follow", action="store_true", help="Print the run's events until it ends.")
        parser.add_argument("--as", dest="username", help="Start the run as this user (default: the owner).")
        parser.add_argument("--timeout", type=float, default=3600, help="Give up following after this many seconds.")

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = Campaign.objects.filter(public_id=options["campaign_id"]).first()
        if campaign is None:
            raise CommandError(f"No campaign {options['campaign_id']!r}.")
        user = campaign.owner
        if options["username"]:
            user = get_user_model().objects.filter(username=options["username"]).first()
            if user is None:
                raise CommandError(f"No user {options['username']!r}.")
        try:
            run = services.run_start(campaign=campaign, created_by=user)
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Started {run.public_id} for {campaign.name} ({campaign.public_id}).")
        if options["follow"]:
            code = self.follow(run, timeout=options["timeout"])
            if code:
                raise CommandError(
                    f"Run {run.public_id} ended {OrchestrationRun.objects.get(pk=run.pk).state}.", returncode=code
                )

    def follow(self, run: OrchestrationRun, *, timeout: float) -> int:
        first = CampaignEvent.objects.filter(campaign=run.campaign, run_public_id=run.public_id).order_by("sequence")
        after = first.values_list("sequence", flat=True).first()
        after = (after or 1) - 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in campaign_events(run.campaign, after=after, limit=EVENTS_MAX_LIMIT):
                after = event.sequence
                self.print_event(event)
                if event.run_public_id == run.public_id and event.event in ENDINGS:
                    return ENDINGS[event.event]
            time.sleep(0.2)
        raise CommandError(
            f"Still running after {timeout:.0f} s; stopped following (the run goes on).", returncode=TIMED_OUT
        )

    def print_event(self, event: CampaignEvent) -> None:
        if event.event == "progress":
            self.stdout.write(bar(event.data["percentage"], event.data.get("message", "")))
            return
        style = {
            "campaign.completed": self.style.SUCCESS,
            "generation.failed": self.style.ERROR,
            "run.cancelled": self.style.WARNING,
        }.get(event.event, str)
        self.stdout.write(style(f"#{event.sequence:<4} {event.event:<28} {describe(event)}"))
