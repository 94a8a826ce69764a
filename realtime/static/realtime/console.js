// The operators' console: refreshes the active runs every 2 s and sends system notices.
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
