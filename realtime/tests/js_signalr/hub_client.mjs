// The real @microsoft/signalr client against the running server, for realtime/tests/test_signalr_client.py.
//
//   node hub_client.mjs <scenario>
//
// Environment: BASE_URL (http://127.0.0.1:PORT), HUB_USERNAME, HUB_PASSWORD, CAMPAIGN_ID, OTHER_CAMPAIGN_ID;
// for the failover scenario BASE_URLS (comma-separated servers, used in turn) and FAILOVER_HOLD.
// Prints one JSON object per line on stdout; the pytest test asserts on them. Client logs go to stderr.
import * as readline from "node:readline";

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import WebSocket from "ws";

const BASE_URLS = (process.env.BASE_URLS || process.env.BASE_URL || "").split(",").filter(Boolean);
const BASE_URL = process.env.BASE_URL || BASE_URLS[0];
const HUB_URL = `${BASE_URL}/hubs/campaign`;
const CAMPAIGN_ID = process.env.CAMPAIGN_ID;

const out = (record) => console.log(JSON.stringify(record));
const logger = {
  log(level, message) {
    if (level >= signalR.LogLevel.Information) process.stderr.write(`[signalr ${level}] ${message}\n`);
  },
};

async function getToken(baseUrl = BASE_URL) {
  const response = await fetch(`${baseUrl}/api/auth/token/`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: process.env.HUB_USERNAME, password: process.env.HUB_PASSWORD }),
  });
  if (!response.ok) throw new Error(`token: ${response.status}`);
  return (await response.json()).access;
}

async function startRun(token) {
  const response = await fetch(`${BASE_URL}/api/campaigns/${CAMPAIGN_ID}/runs/`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: "{}",
  });
  if (response.status !== 202) throw new Error(`start run: ${response.status} ${await response.text()}`);
  return (await response.json()).id;
}

function build(token, options = {}, reconnect = false, protocol = null) {
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(HUB_URL, { accessTokenFactory: () => token, ...options })
    .configureLogging(logger);
  if (reconnect) builder = builder.withAutomaticReconnect();
  if (protocol) builder = builder.withHubProtocol(protocol);
  return builder.build();
}

function waitFor(check, what, timeoutMs = 60000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const timer = setInterval(() => {
      if (check()) {
        clearInterval(timer);
        resolve();
      } else if (Date.now() - started > timeoutMs) {
        clearInterval(timer);
        reject(new Error(`timed out waiting for ${what}`));
      }
    }, 20);
  });
}

// The seed's realtime-api family: JoinCampaignGroup, then a run's events in order.
async function realtimeApi() {
  const token = await getToken();
  const connection = build(token);
  let completed = false;
  connection.on("OnCampaignStarted", (campaignId) => out({ event: "OnCampaignStarted", campaignId }));
  connection.on("OnChunkReceived", (chunk) => out({ event: "OnChunkReceived", chunk }));
  connection.on("OnArtifactGenerated", (artifact) => out({ event: "OnArtifactGenerated", artifact }));
  connection.on("OnComplianceCheckCompleted", (result) => out({ event: "OnComplianceCheckCompleted", result }));
  connection.on("OnGenerationFailed", (error) => out({ event: "OnGenerationFailed", error }));
  connection.on("OnCampaignCompleted", (campaignId) => {
    out({ event: "OnCampaignCompleted", campaignId });
    completed = true;
  });
  await connection.start();
  out({ event: "connected", connectionId: connection.connectionId, state: connection.state });
  const joined = await connection.invoke("JoinCampaignGroup", CAMPAIGN_ID);
  out({ event: "joined", result: joined ?? null });
  const runId = await startRun(token);
  out({ event: "run_started", runId });
  await waitFor(() => completed, "OnCampaignCompleted");
  await connection.invoke("LeaveCampaignGroup", CAMPAIGN_ID);
  await connection.stop();
  out({ event: "stopped", state: connection.state });
}

// The task-012 family: SubscribeToCampaign, GetCampaignSnapshot, events with sequences, CancelRun.
async function task012() {
  const token = await getToken();
  const connection = build(token);
  let runId = null;
  let cancelRequested = false;
  let acknowledged = false;
  let cancelled = false;
  connection.on("ReceiveCampaignSnapshot", (snapshot) => out({ event: "ReceiveCampaignSnapshot", snapshot }));
  connection.on("ReceiveArtifactUpdate", (update) => out({ event: "ReceiveArtifactUpdate", update }));
  connection.on("ReceiveCancellationAcknowledgement", (id) => {
    out({ event: "ReceiveCancellationAcknowledgement", runId: id });
    acknowledged = true;
  });
  connection.on("ReceiveOrchestrationEvent", (evt) => {
    out({ event: "ReceiveOrchestrationEvent", evt });
    if (evt.event === "run.cancelled") cancelled = true;
    if (evt.event === "artifact.generated" && !cancelRequested) {
      cancelRequested = true;
      connection
        .invoke("CancelRun", evt.runId)
        .then(() => out({ event: "cancel_completed" }))
        .catch((error) => out({ event: "cancel_failed", error: String(error.message) }));
    }
  });
  await connection.start();
  await connection.invoke("SubscribeToCampaign", CAMPAIGN_ID);
  const snapshot = await connection.invoke("GetCampaignSnapshot", CAMPAIGN_ID);
  out({ event: "snapshot_result", snapshot });
  runId = await startRun(token);
  out({ event: "run_started", runId });
  await waitFor(() => acknowledged && cancelled, "the cancellation");
  const after = await connection.invoke("GetCampaignSnapshot", CAMPAIGN_ID);
  out({ event: "snapshot_after", snapshot: after });
  await connection.stop();
}

// withAutomaticReconnect(): the test restarts the server; the client re-joins in onreconnected.
async function reconnect() {
  const token = await getToken();
  const connection = build(token, {}, true);
  let done = false;
  connection.on("OnCampaignCompleted", (campaignId) => {
    out({ event: "OnCampaignCompleted", campaignId });
    done = true;
  });
  connection.onreconnecting((error) => out({ event: "reconnecting", error: error ? String(error.message) : null }));
  connection.onreconnected(async (connectionId) => {
    out({ event: "reconnected", connectionId });
    await connection.invoke("JoinCampaignGroup", CAMPAIGN_ID);
    out({ event: "rejoined" });
  });
  connection.onclose((error) => out({ event: "closed", error: error ? String(error.message) : null }));
  await connection.start();
  await connection.invoke("JoinCampaignGroup", CAMPAIGN_ID);
  out({ event: "joined", connectionId: connection.connectionId });
  await waitFor(() => done, "OnCampaignCompleted after the reconnect", 90000);
  await connection.stop();
}

// Refusals with readable errors, skipNegotiation, and a malformed record closing only its own connection.
async function refusals() {
  const bad = build("not-a-valid-token");
  try {
    await bad.start();
    out({ event: "bad_token", ok: true });
  } catch (error) {
    out({ event: "bad_token", ok: false, error: String(error.message) });
  }

  const badSkip = build("not-a-valid-token", { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets });
  try {
    await badSkip.start();
    out({ event: "bad_token_skip_negotiation", ok: true });
  } catch (error) {
    out({ event: "bad_token_skip_negotiation", ok: false, error: String(error.message) });
  }

  const token = await getToken();
  const connection = build(token);
  await connection.start();
  try {
    await connection.invoke("JoinCampaignGroup", process.env.OTHER_CAMPAIGN_ID);
    out({ event: "foreign_campaign", ok: true });
  } catch (error) {
    out({ event: "foreign_campaign", ok: false, error: String(error.message) });
  }
  try {
    await connection.invoke("NoSuchMethod", CAMPAIGN_ID);
    out({ event: "unknown_method", ok: true });
  } catch (error) {
    out({ event: "unknown_method", ok: false, error: String(error.message) });
  }

  const skip = build(token, { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets });
  await skip.start();
  await skip.invoke("JoinCampaignGroup", CAMPAIGN_ID);
  out({ event: "skip_negotiation", ok: true, state: skip.state });
  await skip.stop();

  // A raw WebSocket speaking the protocol badly, next to the real client.
  const raw = new WebSocket(`${HUB_URL.replace(/^http/, "ws")}?access_token=${token}`);
  const received = [];
  const closed = new Promise((resolve) => raw.on("close", (code) => resolve(code)));
  raw.on("message", (data) => received.push(String(data)));
  await new Promise((resolve, reject) => {
    raw.on("open", resolve);
    raw.on("error", reject);
  });
  raw.send('{"protocol":"json","version":1}\x1e');
  await waitFor(() => received.length >= 1, "the handshake answer", 5000);
  raw.send("this is not json\x1e");
  const code = await closed;
  out({ event: "malformed", received, code });

  await connection.invoke("JoinCampaignGroup", CAMPAIGN_ID);
  out({ event: "other_connection_still_works", state: connection.state });
  await connection.stop();
}

// Failover without sticky sessions or stateful reconnect: connected to the first of BASE_URLS, the
// client keeps the last durable `sequence` it received; when its server dies (the test kills it
// with kill -9) the connection closes, and a new connection to the next server resumes with
// SubscribeToCampaign(campaignId, lastSequence): the server replays exactly what was missed, then
// goes on live, until the run ends. With FAILOVER_HOLD=1 it waits for a line on stdin before
// reconnecting, so that the test can let it miss events first.
async function failover() {
  const holdLines = [];
  let wakeHold = null;
  if (process.env.FAILOVER_HOLD === "1") {
    readline.createInterface({ input: process.stdin }).on("line", (line) => {
      holdLines.push(line);
      if (wakeHold) wakeHold();
    });
  }
  const released = () =>
    new Promise((resolve) => {
      wakeHold = () => {
        if (!holdLines.length) return;
        wakeHold = null;
        resolve(holdLines.shift());
      };
      wakeHold();
    });

  // One access token for every server: any process accepts it (no sticky sessions).
  const token = await getToken(BASE_URLS[0]);
  // The campaign is fresh when the test subscribes (a client joining mid-run would start from a
  // GetCampaignSnapshot's lastEventSequence instead).
  let lastSequence = 0;
  let completed = false;
  let connections = 0;
  let markCompleted;
  const completion = new Promise((resolve) => (markCompleted = resolve));

  for (let attempt = 0, index = 0; !completed; index += 1) {
    const baseUrl = BASE_URLS[index % BASE_URLS.length];
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(`${baseUrl}/hubs/campaign`, { accessTokenFactory: () => token })
      .configureLogging(logger)
      .build();
    const closed = new Promise((resolve) => connection.onclose((error) => resolve(error)));
    connection.on("ReceiveOrchestrationEvent", (evt) => {
      if (evt.sequence === undefined) return; // a transient chunk (afterSequence): never replayed
      const { sequence, event: name } = evt;
      out({ event: "ReceiveOrchestrationEvent", sequence, name, replayed: !!evt.replayed, server: baseUrl });
      lastSequence = evt.sequence;
      if (["campaign.completed", "generation.failed", "run.cancelled"].includes(evt.event)) {
        completed = true;
        markCompleted();
      }
    });
    connection.on("ReceiveCampaignSnapshot", (snapshot) => {
      // Only for a resume from before the retained log: the snapshot stands in for the replay.
      out({ event: "ReceiveCampaignSnapshot", lastEventSequence: snapshot.lastEventSequence, server: baseUrl });
      lastSequence = snapshot.lastEventSequence;
    });
    const resumeFrom = connections === 0 ? null : lastSequence;
    try {
      await connection.start();
      if (resumeFrom === null) {
        await connection.invoke("SubscribeToCampaign", CAMPAIGN_ID);
      } else {
        await connection.invoke("SubscribeToCampaign", CAMPAIGN_ID, resumeFrom);
      }
    } catch (error) {
      // The hub refused the subscription (a Completion error): reconnecting would not help.
      if (connection.state === signalR.HubConnectionState.Connected) throw error;
      // This server is down (or died just now): try the next one, backing off a little.
      out({ event: "connect_failed", server: baseUrl, error: String(error.message) });
      if (++attempt > 20) throw new Error(`no server to fail over to: ${BASE_URLS.join(", ")}`);
      await connection.stop().catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 50 * attempt)));
      continue;
    }
    attempt = 0;
    connections += 1;
    out({ event: "subscribed", server: baseUrl, resumedFrom: resumeFrom });
    const error = await Promise.race([closed, completion.then(() => "completed")]);
    if (error === "completed") {
      await connection.stop();
      break;
    }
    out({ event: "disconnected", server: baseUrl, lastSequence, error: error ? String(error.message) : null });
    if (process.env.FAILOVER_HOLD === "1") await released();
  }
  out({ event: "failover_finished", lastSequence, connections });
}

// The account stream (SubscribeToAccount): a run's TaskStarted, SpendUpdate, BudgetAlert and
// TaskCompleted, each with its sequence; then GetAccountSnapshot.
async function account() {
  const token = await getToken();
  const connection = build(token);
  let finished = false;
  let lastSpend = null;
  for (const method of ["TaskStarted", "SpendUpdate", "BudgetAlert", "TaskCompleted"]) {
    connection.on(method, (payload) => {
      out({ event: method, payload });
      if (method === "TaskCompleted") finished = true;
      if (method === "SpendUpdate") lastSpend = payload.spend;
    });
  }
  await connection.start();
  await connection.invoke("SubscribeToAccount");
  out({ event: "subscribed" });
  const runId = await startRun(token);
  out({ event: "run_started", runId });
  await waitFor(() => finished, "TaskCompleted");
  // The run's usage is all counted once it completed; the SpendUpdate saying so may follow by up to
  // a second (one a second at most).
  const snapshot = await connection.invoke("GetAccountSnapshot");
  out({ event: "snapshot", snapshot });
  await waitFor(() => lastSpend === snapshot.spend, `a SpendUpdate of ${snapshot.spend}`, 10000);
  await connection.stop();
}

// The MessagePack hub protocol through a whole run: both method families, one connection each.
async function msgpack() {
  const token = await getToken();
  const seed = build(token, {}, false, new MessagePackHubProtocol());
  const family = build(token, {}, false, new MessagePackHubProtocol());
  let seedDone = false;
  let familyDone = false;
  seed.on("ReceiveOrchestrationEvent", (evt) => {
    out({ event: "ReceiveOrchestrationEvent", evt });
    if (evt.event === "campaign.completed") seedDone = true;
  });
  seed.on("ReceiveArtifactUpdate", (update) => out({ event: "ReceiveArtifactUpdate", update }));
  family.on("OnArtifactGenerated", (artifact) => out({ event: "OnArtifactGenerated", artifact }));
  family.on("OnChunkReceived", (chunk) => out({ event: "OnChunkReceived", chunk }));
  family.on("OnComplianceCheckCompleted", (result) => out({ event: "OnComplianceCheckCompleted", result }));
  family.on("OnCampaignCompleted", (campaignId) => {
    out({ event: "OnCampaignCompleted", campaignId });
    familyDone = true;
  });
  await seed.start();
  await family.start();
  out({ event: "protocols", seed: seed._protocol.name, family: family._protocol.name });
  await seed.invoke("SubscribeToCampaign", CAMPAIGN_ID);
  await family.invoke("JoinCampaignGroup", CAMPAIGN_ID);
  const snapshot = await seed.invoke("GetCampaignSnapshot", CAMPAIGN_ID);
  out({ event: "snapshot_result", snapshot });
  try {
    await seed.invoke("JoinCampaignGroup", "camp_nope");
  } catch (error) {
    out({ event: "refused", error: String(error.message) });
  }
  out({ event: "run_started", runId: await startRun(token) });
  await waitFor(() => seedDone && familyDone, "both families' completion");
  await seed.stop();
  await family.stop();
}

// Stateful reconnect (withStatefulReconnect): the test cuts the socket mid-run (on the server's side,
// or by taking its web process away); the client opens a new socket with the same connection token
// by itself. No onreconnecting/onreconnected (those belong to withAutomaticReconnect, configured too,
// as the fallback it is), and every durable event arrives once. HUB_PROTOCOL=messagepack for MessagePack;
// START_RUN=1 starts the run once subscribed (else the test does).
async function stateful() {
  const token = await getToken();
  let sockets = 0;
  class CountingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets += 1;
      out({ event: "socket_opened", count: sockets });
    }
  }
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(HUB_URL, {
      accessTokenFactory: () => token,
      WebSocket: CountingWebSocket,
      transport: signalR.HttpTransportType.WebSockets,
    })
    .withStatefulReconnect()
    .withAutomaticReconnect()
    .configureLogging(logger);
  if (process.env.HUB_PROTOCOL === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  const connection = builder.build();
  let completed = false;
  connection.onreconnecting((error) => out({ event: "reconnecting", error: String(error) }));
  connection.onreconnected((id) => out({ event: "reconnected", connectionId: id }));
  connection.onclose((error) => out({ event: "closed", error: String(error) }));
  connection.on("ReceiveOrchestrationEvent", (evt) => {
    out({ event: "ReceiveOrchestrationEvent", sequence: evt.sequence ?? null, name: evt.event });
    if (evt.event === "campaign.completed") completed = true;
  });
  await connection.start();
  out({ event: "connected", connectionId: connection.connectionId, protocol: connection._protocol.name });
  await connection.invoke("SubscribeToCampaign", CAMPAIGN_ID);
  out({ event: "subscribed" });
  if (process.env.START_RUN === "1") out({ event: "run_started", runId: await startRun(token) });
  await waitFor(() => completed, "campaign.completed", 120000);
  // The same connection still answers (its invocation ids and acks carried on across the socket change).
  const snapshot = await connection.invoke("GetCampaignSnapshot", CAMPAIGN_ID);
  out({ event: "stateful_finished", connectionId: connection.connectionId, sockets, state: snapshot.currentState });
  await connection.stop();
}

// The connection cap per user (realtime/tests/test_connection_cap.py): hub connections opened and
// closed on the test's word, one line on stdin each: "open URL" (negotiate, then the WebSocket),
// "open-skip URL" (skipNegotiation: the WebSocket straight away, so a refusal is the handshake's),
// "close" (the oldest still open), "exit". Each is answered with one line: opened, refused (with the
// message start() was rejected with), closed.
async function cap() {
  const token = await getToken();
  const open = [];
  const commands = readline.createInterface({ input: process.stdin });
  out({ event: "ready" });
  for await (const line of commands) {
    const [command, baseUrl] = line.trim().split(/\s+/);
    if (command === "exit") break;
    if (command === "close") {
      await open.shift().stop();
      out({ event: "closed" });
      continue;
    }
    const options = command === "open-skip" ? { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets } : {};
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(`${baseUrl}/hubs/campaign`, { accessTokenFactory: () => token, ...options })
      .configureLogging(logger)
      .build();
    try {
      await connection.start();
      open.push(connection);
      out({ event: "opened", server: baseUrl, state: connection.state });
    } catch (error) {
      out({ event: "refused", server: baseUrl, error: String(error.message), state: connection.state });
    }
  }
  for (const connection of open) await connection.stop();
}

const scenarios = { "realtime-api": realtimeApi, task012, reconnect, refusals, failover, account, msgpack, stateful, cap };
const scenario = scenarios[process.argv[2]];
if (!scenario) {
  console.error(`unknown scenario ${process.argv[2]}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
scenario()
  .then(() => {
    out({ event: "done" });
    process.exit(0);
  })
  .catch((error) => {
    out({ event: "error", error: String(error && error.stack ? error.stack : error) });
    process.exit(1);
  });
