// The operators' console: refreshes the active runs every 2 s, sends system notices, and follows the
// operations stream (provider health, alerts) live.
import { CampaignClient } from "./client.js";

const $ = (id) => document.getElementById(id);
const csrf = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="))?.split("=")[1] || "";

async function refresh() {
  try {
    const response = await fetch("/api/ops/runs/", { credentials: "same-origin" });
    if (!response.ok) return;
    const { runs } = await response.json();
    const body = $("active-runs");
    if (!runs.length) {
      body.innerHTML = '<tr><td colspan="6" class="empty">No run is active right now.</td></tr>';
      return;
    }
    body.replaceChildren(...runs.map((run) => {
      const row = document.createElement("tr");
      const cells = [run.id, null, run.owner, null, `${run.progress} %`, new Date(run.created_at).toLocaleTimeString()];
      for (const value of cells) row.append(Object.assign(document.createElement("td"), { textContent: value ?? "" }));
      const link = Object.assign(document.createElement("a"), { href: `/campaigns/${run.campaign_id}/`,
                                                                 textContent: run.campaign_name });
      row.children[1].append(link);
      row.children[3].append(Object.assign(document.createElement("span"), { className: `badge state-${run.state}`,
                                                                            textContent: run.state }));
      return row;
    }));
  } catch (error) {
    // the next refresh tries again
  }
}
setInterval(refresh, 2000);

$("notice-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch("/api/notices/", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
    body: JSON.stringify({ level: $("notice-level").value, message: $("notice-message").value }),
  });
  $("notice-result").textContent = response.ok ? "Sent." : `Not sent (HTTP ${response.status}).`;
  if (response.ok) $("notice-message").value = "";
});

// --- the operations stream: provider health and alerts, live ------------------------------------------------

const ops = JSON.parse($("ops-initial").textContent);

function logOps(frame) {
  const item = document.createElement("li");
  item.dataset.sequence = frame.sequence;
  const { data } = frame;
  const text = frame.event === "provider.health_changed"
    ? `${data.provider} is ${data.status}: ${data.message}`
    : frame.event === "system.alert" ? `${data.level}: ${data.message}` : JSON.stringify(data);
  item.textContent = `#${frame.sequence} ${new Date(frame.emitted_at).toLocaleTimeString()} ${frame.event} — ${text}`;
  $("ops-events").prepend(item);
}

function showProvider({ provider, status, message }, when) {
  const body = $("providers");
  body.querySelector(".empty-row")?.remove();
  let row = body.querySelector(`tr[data-provider="${CSS.escape(provider)}"]`);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.provider = provider;
    row.append(...[0, 1, 2, 3].map(() => document.createElement("td")));
    row.children[0].textContent = provider;
    body.append(row);
  }
  row.children[1].replaceChildren(Object.assign(document.createElement("span"), {
    className: `badge health-${status}`, textContent: status }));
  row.children[2].textContent = new Date(when).toLocaleString();
  row.children[3].textContent = message;
}

for (const frame of ops.events) logOps(frame);
const scheme = location.protocol === "https:" ? "wss" : "ws";
const client = new CampaignClient(`${scheme}://${location.host}/ws/campaigns/`, {
  onEvent: (frame) => {
    logOps(frame);
    if (frame.event === "provider.health_changed") showProvider(frame.data, frame.emitted_at);
  },
  onStatus: (status) => { $("ops-connection").textContent = status; },
});
client.subscribe("ops", { lastSequence: ops.last_sequence });
window.opsClient = client;
