"""The plan every generation run follows, and which steps each step waits for."""

from __future__ import annotations

from campaigns.steps import ARTIFACT_STEPS, AUDIT, COPY, SHORT_COPY, STEP_NAMES, VISUAL

STEP_AGENTS = {
    COPY: "copywriter",
    SHORT_COPY: "short_copywriter",
    VISUAL: "visual_designer",
    AUDIT: "compliance_auditor",
}
GENERATION_STEPS = ARTIFACT_STEPS
FULL_PLAN = STEP_NAMES

# ShortCopy and Visual are written from the copy; they run in parallel once it exists.
DEPENDS_ON = {COPY: (), SHORT_COPY: (COPY,), VISUAL: (COPY,), AUDIT: ()}

# Progress (0-100) reached when a step completes; the run's completion is 100.
PROGRESS_AT_START = 5
PROGRESS_WHEN_DONE = {COPY: 40, SHORT_COPY: 20, VISUAL: 20, AUDIT: 10}

# The agents by name (the track-4 hubs' agent ids), and the step each one does.
AGENT_STEPS = {agent: step for step, agent in STEP_AGENTS.items()}
AGENTS = tuple(AGENT_STEPS)
# An agent's tool (the track-4 ExecuteTool): what it does, run on its own.
TOOLS = {
    "generate_copy": COPY,
    "generate_short_copy": SHORT_COPY,
    "generate_visual": VISUAL,
    "check_compliance": AUDIT,
}
STEP_TOOLS = {step: tool for tool, step in TOOLS.items()}

TASKS = {
    COPY: "Write the long copy for this goal: {goal}",
    SHORT_COPY: "Write the short copy (social posts, ads) from the long copy, for this goal: {goal}",
    VISUAL: "Describe the campaign's visual, for this goal: {goal}",
    AUDIT: "Check every artifact for compliance: claims, disclaimers, lengths and tone.",
}


def plan_steps(goal: str, strategy: str, agents: list[str]) -> list[dict[str, object]]:
    """The steps of a plan for ``goal`` done by ``agents``, in the order a run takes them. Sequential:
    each step waits for the one before. Parallel: each waits only for what it is written from (the
    short copy and the visual for the long copy, when the plan has it; the audit for everything)."""
    names = [name for name in FULL_PLAN if STEP_AGENTS[name] in agents]
    steps: list[dict[str, object]] = []
    for index, name in enumerate(names):
        if strategy == "sequential":
            depends_on = names[index - 1 : index]
        elif name == AUDIT:
            depends_on = [other for other in names if other != AUDIT]
        else:
            depends_on = [other for other in DEPENDS_ON[name] if other in names]
        task = TASKS[name].format(goal=goal)
        steps.append({"id": name, "agent_id": STEP_AGENTS[name], "task": task, "depends_on": depends_on})
    return steps
