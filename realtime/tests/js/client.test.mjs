// Unit tests of static/realtime/client.js: reconnect, resume, resync, duplicates. Run: node --test
import assert from "node:assert/strict";
import { test } from "node:test";

import { BACKOFF_MS, CampaignClient, backoffDelay } from "../../static/realtime/client.js";

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    FakeSocket.all.push(this);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code = 1000) { this.readyState = 3; this.onclose?.({ code }); }
  // test helpers
  open() { this.readyState = 1; this.onopen?.(); }
  receive(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
  drop(code = 1006) { this.readyState = 3; this.onclose?.({ code }); }
}

function fakeTimers() {
  const timers = { queue: [], setTimeout(fn, ms) { const t = { fn, ms }; this.queue.push(t); return t; },
    clearTimeout(t) { this.queue = this.queue.filter((x) => x !== t); },
    setInterval() { return {}; }, clearInterval() {} };
  timers.runNext = () => { const t = timers.queue.shift(); t.fn(); return t.ms; };
  return timers;
}

async function setup(extra = {}) {
  FakeSocket.all = [];
  const seen = { events: [], chunks: [], statuses: [], snapshots: [] };
  const timers = fakeTimers();
  let n = 0;
  const client = new CampaignClient(() => `ws://test/ws/campaigns/?access_token=t${++n}`, {
    WebSocket: FakeSocket, timers, random: () => 0.5,
    onEvent: (f) => seen.events.push(f.sequence), onChunk: (f) => seen.chunks.push(f.data.chunk),
    onStatus: (s, d) => seen.statuses.push([s, d.delay]), onSnapshot: (s, o) => seen.snapshots.push([s, o]),
    ...extra,
  });
  return { client, seen, timers };
}

const flush = () => new Promise((resolve) => setImmediate(resolve));
const event = (sequence) => ({ type: "event", event: "progress", campaign_id: "camp_a", sequence, data: {} });

test("the backoff schedule is 0, 2, 4, 8, 16, then 30 s, with jitter", () => {
  assert.deepEqual(BACKOFF_MS, [0, 2000, 4000, 8000, 16000, 30000]);
  assert.equal(backoffDelay(0, () => 0.9), 0);
  assert.equal(backoffDelay(1, () => 0.5), 2000);
  assert.equal(backoffDelay(9, () => 0.5), 30000);
  assert.equal(backoffDelay(3, () => 0), 6400);
  assert.equal(backoffDelay(3, () => 1), 9600);
});

test("subscribes on open and delivers events in order, once", async () => {
  const { client, seen } = await setup();
  client.subscribe("camp_a");
  await flush();
  const socket = FakeSocket.all[0];
  socket.open();
  assert.deepEqual(socket.sent, [{ type: "subscribe", campaign_id: "camp_a" }]);
  socket.receive({ type: "subscribed", campaign_id: "camp_a", last_sequence: 4 });
  socket.receive(event(5));
  socket.receive(event(5));
  socket.receive(event(3));
  socket.receive(event(6));
  assert.deepEqual(seen.events, [5, 6]);
  assert.equal(client.lastSequence("camp_a"), 6);
});

test("reconnects with backoff and resumes from the last delivered sequence", async () => {
  const { client, seen, timers } = await setup();
  client.subscribe("camp_a", { lastSequence: 10 });
  await flush();
  FakeSocket.all[0].open();
  FakeSocket.all[0].receive(event(11));
  FakeSocket.all[0].drop();
  assert.deepEqual(seen.statuses.at(-1), ["reconnecting", 0]);
  assert.equal(timers.runNext(), 0);
  await flush();
  FakeSocket.all[1].drop(); // the server is still down
  assert.equal(timers.runNext(), 2000);
  await flush();
  FakeSocket.all[2].drop();
  assert.equal(timers.runNext(), 4000);
  await flush();
  const socket = FakeSocket.all[3];
  assert.equal(socket.url, "ws://test/ws/campaigns/?access_token=t4", "a fresh URL (token) per connection");
  socket.open();
  assert.deepEqual(socket.sent, [{ type: "subscribe", campaign_id: "camp_a", last_sequence: 11 }]);
  socket.receive({ type: "subscribed", campaign_id: "camp_a", last_sequence: 13 });
  socket.receive({ ...event(11), replayed: true });
  socket.receive({ ...event(12), replayed: true });
  socket.receive({ ...event(13), replayed: true });
  socket.receive(event(13));
  assert.deepEqual(seen.events, [11, 12, 13]);
  FakeSocket.all[3].drop();
  assert.equal(timers.runNext(), 0, "a connection that opened resets the backoff");
});

test("a resync snapshot replaces the position", async () => {
  const { client, seen } = await setup();
  client.subscribe("camp_a", { lastSequence: 2 });
  await flush();
  const socket = FakeSocket.all[0];
  socket.open();
  const snapshot = { campaign_id: "camp_a", last_event_sequence: 500, current_state: "completed" };
  socket.receive({ type: "snapshot", campaign_id: "camp_a", snapshot, resync: true });
  socket.receive(event(500));
  socket.receive(event(501));
  assert.deepEqual(seen.snapshots, [[snapshot, { resync: true, campaignId: "camp_a" }]]);
  assert.deepEqual(seen.events, [501]);
});

test("chunks go to onChunk and requests resolve by request_id", async () => {
  const { client, seen } = await setup();
  client.subscribe("camp_a");
  await flush();
  const socket = FakeSocket.all[0];
  socket.open();
  socket.receive({ type: "event", event: "artifact.chunk", campaign_id: "camp_a", after_sequence: 3,
                   data: { chunk: "Hello " } });
  assert.deepEqual(seen.chunks, ["Hello "]);
  const answer = client.cancel("run_x");
  const sent = socket.sent.at(-1);
  assert.equal(sent.type, "cancel");
  socket.receive({ type: "cancellation_ack", run_id: "run_x", request_id: sent.request_id });
  assert.deepEqual(await answer, { type: "cancellation_ack", run_id: "run_x", request_id: sent.request_id });
  const refused = client.snapshot("camp_b");
  socket.receive({ type: "error", code: "not_found", message: "Campaign not found.",
                   request_id: socket.sent.at(-1).request_id });
  await assert.rejects(refused, /Campaign not found/);
});

test("a refusal for the connection cap keeps backing off rather than reconnecting at once", async () => {
  const { client, timers } = await setup();
  client.subscribe("camp_a");
  await flush();
  const delays = [];
  for (let refusal = 0; refusal < 4; refusal += 1) {
    const socket = FakeSocket.all.at(-1);
    socket.open(); // accepted, only to be told why it cannot stay
    socket.receive({ type: "error", code: "too_many_connections", message: "Too many open connections" });
    socket.close(1008);
    delays.push(timers.runNext());
    await flush();
  }
  assert.deepEqual(delays, [0, 2000, 4000, 8000]);
  FakeSocket.all.at(-1).open(); // a slot came free: the next drop starts the schedule again
  FakeSocket.all.at(-1).drop();
  assert.equal(timers.runNext(), 0);
});

test("an unauthenticated close stops retrying; an expired token reconnects with a new one", async () => {
  const { client, seen, timers } = await setup();
  client.subscribe("camp_a");
  await flush();
  FakeSocket.all[0].open();
  FakeSocket.all[0].receive({ type: "error", code: "token_expired", message: "expired" });
  FakeSocket.all[0].drop(4401);
  assert.equal(seen.statuses.at(-1)[0], "reconnecting");
  timers.runNext();
  await flush();
  FakeSocket.all[1].open();
  FakeSocket.all[1].receive({ type: "error", code: "unauthenticated", message: "no" });
  FakeSocket.all[1].drop(4401);
  assert.equal(seen.statuses.at(-1)[0], "unauthenticated");
  assert.equal(timers.queue.length, 0);
  client.close();
  assert.equal(seen.statuses.at(-1)[0], "closed");
});

test("the account stream beside a campaign: own positions, resumed after a drop", async () => {
  const { client, seen, timers } = await setup();
  client.subscribe("camp_a");
  client.subscribe("account", { lastSequence: 7 });
  await flush();
  FakeSocket.all[0].open();
  assert.deepEqual(FakeSocket.all[0].sent, [
    { type: "subscribe", campaign_id: "camp_a" },
    { type: "subscribe", stream: "account", last_sequence: 7 },
  ]);
  FakeSocket.all[0].receive({ type: "subscribed", campaign_id: "camp_a", last_sequence: 2 });
  FakeSocket.all[0].receive({ type: "subscribed", stream: "account", last_sequence: 8 });
  const spend = (sequence) => ({ type: "event", stream: "account", event: "spend.updated", sequence, data: {} });
  FakeSocket.all[0].receive(spend(8));
  FakeSocket.all[0].receive(event(3));
  FakeSocket.all[0].receive(spend(8)); // a duplicate of the account's, not confused with the campaign's
  assert.deepEqual(seen.events, [8, 3]);
  assert.equal(client.lastSequence("account"), 8);
  assert.equal(client.lastSequence("camp_a"), 3);
  FakeSocket.all[0].drop();
  timers.runNext();
  await flush();
  FakeSocket.all[1].open();
  assert.deepEqual(FakeSocket.all[1].sent, [
    { type: "subscribe", campaign_id: "camp_a", last_sequence: 3 },
    { type: "subscribe", stream: "account", last_sequence: 8 },
  ]);
  client.unsubscribe("account");
  assert.deepEqual(FakeSocket.all[1].sent.at(-1), { type: "unsubscribe", stream: "account" });
});

class FakeEventSource {
  static all = [];
  constructor(url, options) {
    this.url = url;
    this.options = options;
    this.readyState = 0;
    this.listeners = {};
    FakeEventSource.all.push(this);
  }
  addEventListener(name, listener) { (this.listeners[name] ||= []).push(listener); }
  close() { this.readyState = 2; }
  // test helpers
  emit(name, data, id) { for (const l of this.listeners[name] || []) l({ type: name, data: JSON.stringify(data), lastEventId: id }); }
}

test("falls back to server-sent events when the WebSocket never opens, with the same resume", async () => {
  FakeEventSource.all = [];
  const { client, seen, timers } = await setup({
    EventSource: FakeEventSource,
    sseUrl: (key, last) => `/api/${key}/stream/${last === null ? "" : `?last_sequence=${last}`}`,
  });
  client.subscribe("camp_a", { lastSequence: 4 });
  client.subscribe("account");
  await flush();
  FakeSocket.all[0].drop(); // the proxy refuses the upgrade
  timers.runNext();
  await flush();
  FakeSocket.all[1].drop();
  assert.equal(client.transport, "sse");
  assert.deepEqual(FakeEventSource.all.map((s) => s.url), ["/api/camp_a/stream/?last_sequence=4", "/api/account/stream/"]);
  const [campaign, account] = FakeEventSource.all;
  assert.deepEqual(campaign.options, { withCredentials: true });
  account.emit("snapshot", { stream: "account", last_event_sequence: 9, spend: "0.000000" });
  assert.equal(client.lastSequence("account"), 9);
  campaign.emit("progress", { event: "progress", campaign_id: "camp_a", sequence: 5, data: {} }, "5");
  campaign.emit("progress", { event: "progress", campaign_id: "camp_a", sequence: 5, data: {} }, "5");
  account.emit("spend.updated", { event: "spend.updated", stream: "account", sequence: 10, data: {} }, "10");
  campaign.emit("artifact.chunk", { event: "artifact.chunk", campaign_id: "camp_a", after_sequence: 5, data: { chunk: "x" } });
  assert.deepEqual(seen.events, [5, 10]);
  assert.deepEqual(seen.chunks, ["x"]);
  campaign.readyState = 2; // refused for good (e.g. 401): a new EventSource later, from the last sequence
  campaign.onerror();
  timers.runNext();
  assert.equal(FakeEventSource.all.at(-1).url, "/api/camp_a/stream/?last_sequence=5");
  client.close();
  assert.ok(FakeEventSource.all.every((s) => s.readyState === 2));
});

test("an outage after a WebSocket worked never moves to SSE; close() during the URL opens nothing", async () => {
  FakeEventSource.all = [];
  const { client, timers } = await setup({ EventSource: FakeEventSource, sseUrl: () => "/s" });
  client.subscribe("camp_a");
  await flush();
  FakeSocket.all[0].open();
  for (let i = 0; i < 4; i++) {
    FakeSocket.all.at(-1).drop();
    timers.runNext();
    await flush();
  }
  assert.equal(client.transport, "websocket");
  assert.equal(FakeEventSource.all.length, 0);
  let release;
  const slow = new CampaignClient(() => new Promise((resolve) => { release = resolve; }), { WebSocket: FakeSocket, timers });
  const before = FakeSocket.all.length;
  slow.subscribe("camp_b");
  slow.close();
  release("ws://test/");
  await flush();
  assert.equal(FakeSocket.all.length, before, "closed while its URL was being made: no socket");
});
