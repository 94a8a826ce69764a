// The live campaign page: applies the server-rendered snapshot, then every event from the socket.
import { CampaignClient } from "./client.js";

const initial = JSON.parse(document.getElementById("initial-state").textContent);
const root = document.querySelector(".live");
const campaignId = root.dataset.campaignId;
const $ = (id) => document.getElementById(id);
const TYPES = ["Copy", "ShortCopy", "Visual"];
const FINISHED = ["completed", "failed", "cancelled"];
const csrf = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="))?.split("=")[1] || "";

const state = { run: initial.run, state: initial.snapshot.current_state, approvalId: null, streaming: {} };

function setState(value, position = state.position) {
  state.state = value;
  state.position = value === "queued" ? position : null;
  const badge = $("state");
  // A queued run waits for one of its account's runs to finish (a fair share of the workers).
  badge.textContent = state.position ? `queued: ${state.position === 1 ? "next" : `#${state.position}`} in line` : value.replace("_", " ");
  badge.className = `badge state-${value}`;
  const active = !FINISHED.includes(value) && value !== "idle";
  $("start").disabled = active;
  $("cancel").disabled = !active || !state.run;
  $("retry").disabled = !state.run || !["failed", "cancelled"].includes(value);
}

function setProgress(percentage) {
  $("progress").setAttribute("aria-valuenow", String(percentage));
  $("progress-bar").style.width = `${percentage}%`;
}

function renderSteps(steps) {
  const list = $("steps");
  list.replaceChildren(...steps.map((step) => {
    const item = document.createElement("li");
    item.id = `step-${step.step}`;
    item.className = `step step-${step.status}`;
    item.innerHTML = `<span class="step-name"></span> <span class="step-status"></span>`;
    item.querySelector(".step-name").textContent = step.step === "audit" ? "Audit" : step.step;
    item.querySelector(".step-status").textContent = stepLabel(step);
    return item;
  }));
}

function stepLabel(step) {
  return step.attempt > 1 ? `${step.status}, attempt ${step.attempt}` : step.status;
}

function updateStep(name, status, attempt) {
  const item = $(`step-${name}`);
  if (!item) return;
  item.className = `step step-${status}`;
  item.querySelector(".step-status").textContent = stepLabel({ status, attempt });
}

function showArtifact(artifact) {
  const box = $(artifact.type);
  delete state.streaming[artifact.type];
  $(`${artifact.type}-version`).textContent = `v${artifact.version} · ${artifact.agent_name}`;
  if (artifact.type === "Visual") {
    // An <img> never runs script from an SVG, whatever it contains.
    const image = document.createElement("img");
    image.alt = artifact.metadata.headline || "Campaign visual";
    image.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(artifact.content)}`;
    box.replaceChildren(image);
  } else {
    const text = document.createElement("div");
    text.className = "final";
    text.textContent = artifact.content;
    box.replaceChildren(text);
  }
}

function appendChunk(data) {
  const box = $(data.artifact_type);
  if (!box) return;
  let live = state.streaming[data.artifact_type];
  if (!live) {
    live = document.createElement("div");
    live.className = "streaming";
    box.replaceChildren(live);
    state.streaming[data.artifact_type] = live;
  }
  live.textContent += data.chunk;
}

function showCompliance(result) {
  const box = $("compliance");
  if (!result) {
    box.innerHTML = '<p class="empty">The audit runs after the artifacts are ready.</p>';
    return;
  }
  const verdict = result.is_compliant ? "Compliant" : "Not compliant";
  box.innerHTML = `<p class="score"><strong class="verdict"></strong> <span class="score-value"></span></p>
    <p class="feedback"></p><ul class="issues"></ul>`;
  box.querySelector(".verdict").textContent = verdict;
  box.querySelector(".score-value").textContent = `score ${result.compliance_score} / 100`;
  box.querySelector(".feedback").textContent = result.feedback;
  box.querySelector(".issues").replaceChildren(...result.issues.map((issue) => {
    const item = document.createElement("li");
    item.className = `severity-${issue.severity}`;
    item.textContent = `${issue.severity}: ${issue.artifact_type}: ${issue.issue_description}`;
    return item;
  }));
}

/** The pending approval: a run's review of its artifacts, or (with ``tool``) a tool an agent asks to run. */
function setApproval(approvalId, runId = null, tool = null) {
  state.approvalId = approvalId;
  state.approvalRun = runId || (state.run && state.run.id);
  $("approval").hidden = !approvalId;
  const forTool = Boolean(approvalId && tool);
  $("approval-review").hidden = forTool;
  $("approval-type-field").hidden = forTool;
  $("approval-tool").hidden = !forTool;
  $("approval-comment-label").textContent = forTool ? "Reason (optional)" : "Feedback";
  $("reject").textContent = forTool ? "Reject" : "Reject with feedback";
  if (forTool) {
    const instructions = tool.parameters && tool.parameters.instructions;
    $("approval-tool").textContent = `The ${tool.agent} asks to run ${tool.tool_name}`
      + (instructions ? ` with the instructions: “${instructions}”.` : ".");
  }
}

// --- the conversation with the agents: each message, then its answer (streamed, then whole) ---------------

const AGENT_OF = { Copy: "copywriter", ShortCopy: "short_copywriter", Visual: "visual_designer" };
const conversation = new Map(); // run id -> {agent, answer element}

function converse(frame) {
  const data = frame.data;
  if (frame.event === "agent.message") {
    if (conversation.has(frame.run_id)) return;
    $("conversation-empty")?.remove();
    const asked = document.createElement("li");
    asked.className = "said";
    asked.dataset.runId = frame.run_id;
    asked.innerHTML = '<span class="who"></span> <span class="what"></span>';
    asked.querySelector(".who").textContent = `${data.sent_by} → ${data.agent}:`;
    asked.querySelector(".what").textContent = data.content;
    const answer = document.createElement("li");
    answer.className = "answer pending";
    answer.dataset.runId = frame.run_id;
    answer.dataset.agent = data.agent;
    answer.innerHTML = '<span class="who"></span> <span class="what"></span>';
    answer.querySelector(".who").textContent = `${data.agent}:`;
    answer.querySelector(".what").textContent = "working on it…";
    $("conversation").append(asked, answer);
    conversation.set(frame.run_id, { agent: data.agent, answer, streamed: false });
    return;
  }
  const talk = conversation.get(frame.run_id);
  if (!talk) return;
  const what = talk.answer.querySelector(".what");
  const done = (text, className = "answer") => {
    talk.answer.className = className;
    what.textContent = text;
  };
  if (frame.event === "artifact.chunk" && AGENT_OF[data.artifact_type] === talk.agent && data.chunk) {
    if (!talk.streamed) { what.textContent = ""; talk.streamed = true; talk.answer.className = "answer streaming"; }
    what.textContent += data.chunk;
  } else if (frame.event === "artifact.generated" && data.artifact.agent_name === talk.agent) {
    const artifact = data.artifact;
    done(artifact.type === "Visual" ? `New visual, v${artifact.version} (shown above).` : artifact.content);
    talk.answer.dataset.artifactId = artifact.id;
  } else if (frame.event === "compliance.completed" && talk.agent === "compliance_auditor") {
    done(`${data.is_compliant ? "Compliant" : "Not compliant"}, score ${data.compliance_score} / 100. ${data.feedback}`);
  } else if (frame.event === "generation.failed" || frame.event === "run.cancelled") {
    if (talk.answer.classList.contains("streaming") || talk.answer.classList.contains("pending")) {
      done(frame.event === "run.cancelled" ? "Cancelled." : `Could not answer: ${data.error_message}`, "answer failed");
    }
  }
}

function setUsage(usage) {
  $("usage").textContent = `${usage.prompt_tokens + usage.completion_tokens} tokens · $${Number(usage.cost).toFixed(4)}`;
}

function logEvent(frame) {
  const item = document.createElement("li");
  item.dataset.sequence = frame.sequence;
  const time = new Date(frame.emitted_at).toLocaleTimeString();
  item.textContent = `#${frame.sequence} ${time} ${frame.event}`;
  const log = $("log");
  log.append(item);
  while (log.children.length > 300) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

function say(text) {
  $("message").textContent = text;
}

// --- applying events ---------------------------------------------------------------------------------

function apply(frame, { quiet = false } = {}) {
  const data = frame.data;
  switch (frame.event) {
    case "campaign.started":
      if (!state.run || state.run.id !== data.run_id || !state.run.steps.length) {
        state.run = { id: data.run_id, steps: data.plan.map((step) => ({ step, status: "pending", attempt: 0 })) };
        renderSteps(state.run.steps);
      }
      setApproval(null);
      break;
    case "run.queued":
      if (state.run && state.run.id === data.run_id) setState(state.state, data.position);
      break;
    case "orchestration.state_changed":
      if (["pending", "queued"].includes(data.state) && (!state.run || state.run.id !== frame.run_id)) {
        state.run = { id: frame.run_id, steps: [] };
      }
      setState(data.state, null);
      if (data.state === "pending" && !quiet) { setProgress(0); showCompliance(null); }
      break;
    case "step.started":
      updateStep(data.step, "running", data.attempt);
      break;
    case "step.completed":
      updateStep(data.step, "completed", data.attempt);
      break;
    case "progress":
      setProgress(data.percentage);
      break;
    case "artifact.generated":
      showArtifact(data.artifact);
      break;
    case "compliance.completed":
      showCompliance(data);
      break;
    case "approval.required":
      setApproval(data.approval_id, frame.run_id, data.tool || null);
      break;
    case "approval.resolved":
      setApproval(null);
      break;
    case "usage.updated":
      setUsage(data);
      break;
    case "generation.failed":
      if (!quiet) say(`Generation failed at ${data.step}: ${data.error_message}`);
      break;
    case "run.cancelled":
      if (!quiet) say(`Run cancelled by ${data.requested_by}.`);
      break;
    case "campaign.completed":
      if (!quiet) say("Campaign ready.");
      break;
    default:
      break;
  }
  converse(frame);
  logEvent(frame);
}

function applySnapshot(snapshot) {
  setState(snapshot.current_state);
  for (const artifact of snapshot.artifacts) showArtifact(artifact);
  showCompliance(snapshot.compliance);
}

// --- first paint: the snapshot the server rendered, then the socket from its sequence -----------------

applySnapshot(initial.snapshot);
if (initial.run) {
  renderSteps(initial.run.steps);
  if (initial.run.state === "queued") setState("queued", initial.run.queue_position);
  setProgress(initial.run.progress);
  setUsage(initial.run.usage);
  const pending = initial.run.approvals.find((a) => a.state === "pending");
  if (pending && initial.run.state === "awaiting_approval") setApproval(pending.id, initial.run.id, pending.tool);
}
for (const frame of initial.conversation) converse(frame);
for (const frame of initial.events) logEvent(frame);

const connection = $("connection");
let countdown = null;
const scheme = location.protocol === "https:" ? "wss" : "ws";
// The viewer's account: this month's spend against the budget, live from the account stream.
function setSpend({ spend, budget }) {
  const used = budget !== null && budget !== undefined && Number(budget) > 0
    ? ` (${Math.round((100 * Number(spend)) / Number(budget))} %)` : "";
  $("spend").textContent = budget === null || budget === undefined
    ? `Spend this month: $${Number(spend).toFixed(4)}`
    : `Spend this month: $${Number(spend).toFixed(4)} of $${Number(budget).toFixed(2)}${used}`;
  $("spend").dataset.spend = spend;
}
setSpend(initial.account);

function applyAccount(frame) {
  if (frame.event === "spend.updated") setSpend(frame.data);
  if (frame.event === "budget.alert") {
    setSpend(frame.data);
    say(`Budget alert: ${frame.data.threshold} % of this month's budget is spent.`);
  }
}

// ?transport=sse forces server-sent events; they are also used on their own where WebSockets are blocked.
const streamUrl = (key, lastSequence) => {
  const path = key === "account" ? "/api/account/stream/" : `/api/campaigns/${key}/stream/`;
  return lastSequence === null || lastSequence === undefined ? path : `${path}?last_sequence=${lastSequence}`;
};
const client = new CampaignClient(`${scheme}://${location.host}/ws/campaigns/`, {
  sseUrl: streamUrl,
  transport: new URLSearchParams(location.search).get("transport") === "sse" ? "sse" : "websocket",
  onEvent: (frame) => (frame.stream === "account" ? applyAccount(frame) : apply(frame)),
  onChunk: (frame) => { appendChunk(frame.data); converse(frame); },
  onSnapshot: (snapshot, { resync, campaignId: key }) => {
    if (key === "account") setSpend(snapshot);
    else if (resync) { applySnapshot(snapshot); say("Caught up from a snapshot."); }
  },
  onNotice: (frame) => say(`${frame.level === "info" ? "Notice" : frame.level.toUpperCase()}: ${frame.message}`),
  onError: (frame) => say(frame.message),
  onStatus: (status, detail) => {
    clearInterval(countdown);
    connection.className = `connection connection-${status}`;
    if (status === "reconnecting" && detail.delay !== undefined) {
      const tick = () => {
        const seconds = Math.max(0, Math.ceil((detail.retryAt - Date.now()) / 1000));
        connection.textContent = `reconnecting (next try in ${seconds} s)`;
      };
      tick();
      countdown = setInterval(tick, 500);
    } else {
      connection.textContent = { connected: "connected", connecting: "connecting…", reconnecting: "reconnecting…",
        offline: "offline", unauthenticated: "logged out: reload to log in", closed: "closed" }[status] || status;
    }
  },
});
client.subscribe(campaignId, { lastSequence: initial.snapshot.last_event_sequence });
client.subscribe("account", { lastSequence: initial.account.last_event_sequence });
window.campaignClient = client;

// --- controls ----------------------------------------------------------------------------------------------

async function post(url, body = {}) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrf }, body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = answer.detail || Object.values(answer).flat().join(" ") || `HTTP ${response.status}`;
    throw new Error(detail);
  }
  return answer;
}

function action(button, run) {
  $(button).addEventListener("click", async () => {
    $(button).disabled = true;
    try {
      say("");
      await run();
    } catch (error) {
      say(error.message);
    } finally {
      setState(state.state);
    }
  });
}

action("start", async () => {
  const run = await post(`/api/campaigns/${campaignId}/runs/`);
  const heard = state.run && state.run.id === run.id; // its events came first: they are newer than this answer
  state.run = { id: run.id, steps: run.steps };
  renderSteps(run.steps);
  if (run.state === "queued" && !heard) setState("queued", run.queue_position);
});
action("cancel", () => (client.transport === "sse" ? post(`/api/runs/${state.run.id}/cancel/`) : client.cancel(state.run.id)));
action("retry", () => post(`/api/runs/${state.run.id}/retry/`));
action("approve", () => post(`/api/runs/${state.approvalRun}/approvals/${state.approvalId}/`, { decision: "approve" }));
action("reject", () => post(`/api/runs/${state.approvalRun}/approvals/${state.approvalId}/`, {
  decision: "reject", comment: $("approval-comment").value, artifact_type: $("approval-type").value || null,
}));
$("message-form").addEventListener("submit", async (submitted) => {
  submitted.preventDefault();
  const button = $("send-message");
  button.disabled = true;
  try {
    say("");
    await post(`/api/campaigns/${campaignId}/messages/`, { agent: $("message-agent").value, content: $("message-content").value });
    $("message-content").value = "";
  } catch (error) {
    say(error.message);
  } finally {
    button.disabled = false;
  }
});
