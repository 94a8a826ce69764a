// A whole track-4 flow with the real @microsoft/signalr client, for realtime/tests/test_signalr_track4.py:
// two connections to /hubs/orchestrator and two to /hubs/agent, one user.
//
//   node track4.mjs [stateful]
//
// Environment: BASE_URL, HUB_USERNAME, HUB_PASSWORD, OTHER_CAMPAIGN_ID (another user's campaign),
// HUB_PROTOCOL (json or messagepack). Prints one JSON object per line: {client, event, ...}.
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import WebSocket from "ws";

const BASE_URL = process.env.BASE_URL;
const out = (record) => console.log(JSON.stringify(record));
const logger = {
  log(level, message) {
    if (level >= signalR.LogLevel.Information) process.stderr.write(`[signalr ${level}] ${message}\n`);
  },
};
const AGENTS = ["copywriter", "short_copywriter", "visual_designer", "compliance_auditor"];
const ORCHESTRATOR_EVENTS = ["SessionCreated", "OrchestrationPlanCreated", "OrchestrationProgress", "OrchestrationCompleted"];
const AGENT_EVENTS = [
  "ReceiveAgentMessage",
  "ReceiveStreamingUpdate",
  "ReceiveAgentResponse",
  "ReceiveError",
  "ToolExecutionStarted",
  "ToolApprovalRequired",
  "ToolExecutionCompleted",
];

async function getToken() {
  const response = await fetch(`${BASE_URL}/api/auth/token/`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: process.env.HUB_USERNAME, password: process.env.HUB_PASSWORD }),
  });
  if (!response.ok) throw new Error(`token: ${response.status}`);
  return (await response.json()).access;
}

/** A connection to a hub that records every client event it gets as {client, event, payload}. */
async function connect(name, hub, token, events) {
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(`${BASE_URL}/hubs/${hub}`, { accessTokenFactory: () => token })
    .configureLogging(logger);
  if (process.env.HUB_PROTOCOL === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  const connection = builder.build();
  connection.seen = [];
  for (const event of events) {
    connection.on(event, (payload) => {
      connection.seen.push({ event, payload });
      out({ client: name, event, payload });
    });
  }
  await connection.start();
  out({ client: name, event: "connected", connectionId: connection.connectionId });
  return connection;
}

function waitFor(check, what, timeoutMs = 90000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const timer = setInterval(() => {
      const found = check();
      if (found) {
        clearInterval(timer);
        resolve(found);
      } else if (Date.now() - started > timeoutMs) {
        clearInterval(timer);
        reject(new Error(`timed out waiting for ${what}`));
      }
    }, 20);
  });
}

const seenOf = (connection, event, test = () => true) =>
  connection.seen.find((item) => item.event === event && test(item.payload));

async function invoke(connection, name, method, ...args) {
  try {
    const result = await connection.invoke(method, ...args);
    out({ client: name, event: "result", method, result: result ?? null });
    return result;
  } catch (error) {
    out({ client: name, event: "refused", method, error: String(error.message) });
    return undefined;
  }
}

async function main() {
  const token = await getToken();
  const orch1 = await connect("orch1", "orchestrator", token, ORCHESTRATOR_EVENTS);
  const orch2 = await connect("orch2", "orchestrator", token, ORCHESTRATOR_EVENTS);

  // A session with every agent; the second client joins it.
  const created = await invoke(orch1, "orch1", "CreateSession", { name: "Spring launch", agentIds: AGENTS });
  const sessionId = created.sessionId;
  await waitFor(() => seenOf(orch1, "SessionCreated"), "SessionCreated");
  await invoke(orch2, "orch2", "JoinSession", sessionId);

  // A plan of each strategy, executed to the end; both clients see the same.
  for (const strategy of ["sequential", "parallel"]) {
    const plan = await invoke(orch1, "orch1", "CreateOrchestrationPlan", {
      sessionId,
      goal: `Launch the spring range (${strategy})`,
      strategy,
      availableAgentIds: AGENTS,
    });
    for (const client of [orch1, orch2]) {
      await waitFor(() => seenOf(client, "OrchestrationPlanCreated", (p) => p.id === plan.id), "OrchestrationPlanCreated");
    }
    await invoke(orch1, "orch1", "ExecutePlan", plan.id);
    for (const client of [orch1, orch2]) {
      await waitFor(() => seenOf(client, "OrchestrationCompleted", (p) => p.planId === plan.id), "OrchestrationCompleted");
    }
    out({ event: "plan_done", planId: plan.id, strategy });
  }

  // A conversation with each agent: its answer streams to both agent-hub clients.
  const agent1 = await connect("agent1", "agent", token, AGENT_EVENTS);
  const agent2 = await connect("agent2", "agent", token, AGENT_EVENTS);
  await invoke(agent1, "agent1", "JoinSession", sessionId);
  await invoke(agent2, "agent2", "JoinSession", sessionId);
  for (const agentId of AGENTS) {
    const before = agent2.seen.length;
    await invoke(agent1, "agent1", "SendAgentMessage", {
      sessionId,
      agentId,
      content: `Make it punchier (${agentId})`,
      attachments: [],
    });
    // The run ends with the audit: the auditor's answer is the last thing it sends.
    for (const client of [agent1, agent2]) {
      await waitFor(
        () => client.seen.slice(before).find((i) => i.event === "ReceiveAgentResponse" && i.payload.agentId === "compliance_auditor"),
        `the audit after the message to ${agentId}`,
      );
    }
    out({ event: "message_done", agentId });
  }
  const artifacts = await (
    await fetch(`${BASE_URL}/api/campaigns/${sessionId}/artifacts/`, {
      headers: { Authorization: `Bearer ${token}` },
    })
  ).json();
  out({ event: "artifacts", artifacts });

  // Refusals: an unknown agent, another user's session, a message while the agent is busy.
  await invoke(agent1, "agent1", "SendAgentMessage", { sessionId, agentId: "nobody", content: "hello" });
  await waitFor(() => seenOf(agent1, "ReceiveError", (p) => p.code === "AGENT_NOT_FOUND"), "AGENT_NOT_FOUND");
  const other = process.env.OTHER_CAMPAIGN_ID;
  await invoke(agent1, "agent1", "SendAgentMessage", { sessionId: other, agentId: "copywriter", content: "hello" });
  await waitFor(() => seenOf(agent1, "ReceiveError", (p) => p.code === "SESSION_NOT_FOUND"), "SESSION_NOT_FOUND");
  await invoke(agent1, "agent1", "JoinSession", other);
  await invoke(orch1, "orch1", "JoinSession", other);
  await invoke(orch1, "orch1", "CreateOrchestrationPlan", { sessionId: other, goal: "x", strategy: "parallel" });
  let mark = agent1.seen.length;
  await invoke(agent1, "agent1", "SendAgentMessage", { sessionId, agentId: "copywriter", content: "Shorter, please" });
  await invoke(agent1, "agent1", "SendAgentMessage", { sessionId, agentId: "visual_designer", content: "Bluer" });
  await waitFor(() => seenOf(agent1, "ReceiveError", (p) => p.code === "BUSY"), "BUSY");
  await waitFor(
    () => agent1.seen.slice(mark).find((i) => i.event === "ReceiveAgentResponse" && i.payload.agentId === "compliance_auditor"),
    "the busy run's end",
  );

  // A tool behind an approval: approved from the other connection, then another rejected.
  for (const decision of ["approve", "reject"]) {
    mark = agent1.seen.length;
    await invoke(agent1, "agent1", "ExecuteTool", {
      sessionId,
      agentId: "short_copywriter",
      toolName: "generate_short_copy",
      parameters: { instructions: `Three posts (${decision})` },
      requireApproval: true,
    });
    const required = await waitFor(
      () => agent2.seen.find((i) => i.event === "ToolApprovalRequired" && !i.decided && (i.decided = true)),
      "ToolApprovalRequired on the other connection",
    );
    if (decision === "approve") await invoke(agent2, "agent2", "ApproveTool", required.payload.id);
    else await invoke(agent2, "agent2", "RejectTool", required.payload.id, "Not this week");
    await invoke(agent2, "agent2", "ApproveTool", required.payload.id); // decided already: refused
    await waitFor(() => agent1.seen.slice(mark).find((i) => i.event === "ToolExecutionCompleted"), "ToolExecutionCompleted");
    out({ event: "tool_done", decision });
  }
  for (const connection of [orch1, orch2, agent1, agent2]) await connection.stop();
}

// withStatefulReconnect() on /hubs/agent: the test cuts the socket while the answer streams; the
// client carries on over a new socket (same connection id, no onreconnecting) and the conversation
// arrives whole: the message once, the answer once. CAMPAIGN_ID is the session.
async function stateful() {
  const token = await getToken();
  const sessionId = process.env.CAMPAIGN_ID;
  let sockets = 0;
  class CountingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets += 1;
      out({ event: "socket_opened", count: sockets });
    }
  }
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(`${BASE_URL}/hubs/agent`, {
      accessTokenFactory: () => token,
      WebSocket: CountingWebSocket,
      transport: signalR.HttpTransportType.WebSockets,
    })
    .withStatefulReconnect()
    .withAutomaticReconnect()
    .configureLogging(logger)
    .build();
  connection.seen = [];
  connection.onreconnecting((error) => out({ event: "reconnecting", error: String(error) }));
  connection.onreconnected((id) => out({ event: "reconnected", connectionId: id }));
  for (const event of AGENT_EVENTS) {
    connection.on(event, (payload) => {
      connection.seen.push({ event, payload });
      out({ client: "stateful", event, payload });
    });
  }
  await connection.start();
  out({ event: "connected", connectionId: connection.connectionId });
  await connection.invoke("JoinSession", sessionId);
  await connection.invoke("SendAgentMessage", { sessionId, agentId: "copywriter", content: "Punchier" });
  await waitFor(
    () => seenOf(connection, "ReceiveAgentResponse", (p) => p.agentId === "compliance_auditor"),
    "the audit after the answer",
    120000,
  );
  out({ event: "stateful_finished", connectionId: connection.connectionId, sockets });
  await connection.stop();
}

const scenario = process.argv[2] === "stateful" ? stateful : main;
scenario()
  .then(() => {
    out({ event: "done" });
    process.exit(0);
  })
  .catch((error) => {
    out({ event: "error", error: String(error && error.stack ? error.stack : error) });
    process.exit(1);
  });
