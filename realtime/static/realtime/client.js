/**
 * Browser client for the campaign WebSocket (PROTOCOL.md §5). A plain ES module with no dependencies.
 *
 *   import { CampaignClient } from "/static/realtime/client.js";
 *   const client = new CampaignClient(() => `wss://host/ws/campaigns/?access_token=${token()}`, {
 *     onEvent(frame) {},                 // durable events, in order, each exactly once
 *     onChunk(frame) {},                 // transient artifact.chunk frames
 *     onSnapshot(snapshot, { resync }) {},// a snapshot answer, or a resync after a long absence
 *     onStatus(status, detail) {},       // "connecting" | "connected" | "reconnecting" (detail.delay,
 *                                        // detail.retryAt) | "offline" | "unauthenticated" | "closed"
 *     onNotice(frame) {},                // system.notice
 *     onError(frame) {},                 // error frames that answer no request
 *   });
 *   client.subscribe("camp_…", { lastSequence: 17 });   // omit lastSequence to start from now
 *   client.subscribe("account");                         // the user's account stream (PROTOCOL.md §11);
 *                                                        // "ops" for operators; frames carry `stream`
 *   await client.snapshot("camp_…"); await client.cancel("run_…");
 *
 * It reconnects with exponential backoff and jitter (0, 2, 4, 8, 16, then 30 s), resumes every
 * subscription from the last sequence it delivered, applies a resync snapshot, and drops
 * duplicates, so callbacks see each durable event once and in order across reconnects. A URL
 * function is called for every connection, so it can supply a fresh token.
 *
 * Where WebSockets are blocked (a proxy that refuses the upgrade), give it `sseUrl(key, lastSequence)`
 * (the server-sent event stream of a campaign id or "account", PROTOCOL.md §10): after
 * SSE_FALLBACK_AFTER WebSocket attempts that never opened (and none ever did: an outage after a
 * WebSocket worked is not a blocking proxy), or at once with `transport: "sse"`, each
 * subscription is read from its own EventSource, with the same callbacks, resume and de-duplication
 * (EventSource reconnects by itself with Last-Event-ID). Over SSE, `snapshot()` and `cancel()` are not
 * available (use the REST API); `client.transport` says which is in use.
 */

export const BACKOFF_MS = [0, 2000, 4000, 8000, 16000, 30000];
export const SSE_FALLBACK_AFTER = 2;
/** Every event name a stream sends (EventSource only hands named events to listeners of that name). */
export const SSE_EVENTS = [
  "snapshot", "stream.error", "system.notice", "artifact.chunk",
  "campaign.started", "orchestration.state_changed", "step.started", "step.completed", "agent.thought",
  "progress", "artifact.generated", "checkpoint.created", "approval.required", "approval.resolved",
  "compliance.completed", "usage.updated", "campaign.completed", "generation.failed", "run.cancelled",
  "plan.created", "plan.completed", "agent.message", "tool.completed", "run.queued",
  "run.started", "run.completed", "run.failed", "spend.updated", "budget.alert",
  "webhook.delivered", "webhook.failed",
];
export const PING_INTERVAL_MS = 20000;
const CLOSE_UNAUTHENTICATED = 4401;
/** The streams a connection can follow besides campaigns (campaign ids start with "camp_"). */
export const STREAMS = ["account", "ops"];

/** The subscribe/unsubscribe/snapshot fields naming a campaign or a stream. */
function target(key) {
  return STREAMS.includes(key) ? { stream: key } : { campaign_id: key };
}

/** Which subscription a server frame is about. */
function keyOf(frame) {
  return frame.stream !== undefined ? frame.stream : frame.campaign_id;
}

/** The delay before reconnect attempt `attempt` (0-based): the schedule above, ±20 % jitter. */
export function backoffDelay(attempt, random = Math.random) {
  const base = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
  return base === 0 ? 0 : Math.round(base * (0.8 + 0.4 * random()));
}

export class CampaignClient {
  constructor(url, options = {}) {
    this.url = typeof url === "function" ? url : () => url;
    this.options = options;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.timers = options.timers || globalThis;
    this.random = options.random || Math.random;
    this.subscriptions = new Map(); // campaign id -> { lastSequence: number | null }
    this.pending = new Map(); // request id -> { resolve, reject }
    this.nextRequest = 1;
    this.attempt = 0;
    this.attemptBeforeOpen = 0; // where the backoff stood when the current socket opened
    this.status = "idle";
    this.socket = null;
    this.closedByUser = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.EventSource = options.EventSource || globalThis.EventSource;
    this.sseUrl = options.sseUrl || null;
    this.transport = options.transport === "sse" && this.sseUrl ? "sse" : "websocket";
    this.neverOpened = 0; // WebSocket attempts in a row that never opened
    this.everOpened = false; // a WebSocket opened once: an outage later is not a blocking proxy
    this.sources = new Map(); // subscription key -> EventSource (transport "sse")
    this.sseAttempts = new Map(); // subscription key -> streams refused in a row (their backoff)
    this.sseTimers = new Set();
  }

  // --- public API ------------------------------------------------------------------------------------

  connect() {
    this.closedByUser = false;
    if (this.transport === "sse") return this; // each subscription has its stream
    if (!this.socket && !this.opening) this.open(); // one socket, however many subscribe at once
    return this;
  }

  subscribe(campaignId, { lastSequence = null } = {}) {
    this.subscriptions.set(campaignId, { lastSequence });
    if (this.transport === "sse") {
      this.closedByUser = false;
      this.openStream(campaignId);
      return;
    }
    this.sendSubscribe(campaignId);
    this.connect();
  }

  unsubscribe(campaignId) {
    this.subscriptions.delete(campaignId);
    this.closeStream(campaignId);
    this.send({ type: "unsubscribe", ...target(campaignId) });
  }

  lastSequence(campaignId) {
    const subscription = this.subscriptions.get(campaignId);
    return subscription ? subscription.lastSequence : null;
  }

  snapshot(campaignId) {
    return this.request({ type: "snapshot", ...target(campaignId) });
  }

  cancel(runId) {
    return this.request({ type: "cancel", run_id: runId });
  }

  close() {
    this.closedByUser = true;
    this.clearTimers();
    if (this.socket) this.socket.close(1000);
    this.socket = null;
    for (const key of [...this.sources.keys()]) this.closeStream(key);
    for (const timer of this.sseTimers) this.timers.clearTimeout(timer);
    this.sseTimers.clear();
    this.setStatus("closed");
  }

  // --- server-sent events ----------------------------------------------------------------------------

  useSse() {
    this.transport = "sse";
    this.clearTimers();
    this.setStatus("connecting", { transport: "sse" });
    for (const key of this.subscriptions.keys()) this.openStream(key);
  }

  openStream(key) {
    this.closeStream(key);
    const subscription = this.subscriptions.get(key);
    const source = new this.EventSource(this.sseUrl(key, subscription.lastSequence), { withCredentials: true });
    this.sources.set(key, source);
    source.onopen = () => {
      if (this.sources.get(key) !== source) return;
      this.sseAttempts.delete(key);
      this.setStatus("connected", { transport: "sse" });
    };
    source.onerror = () => {
      if (this.sources.get(key) !== source || this.closedByUser) return;
      if (source.readyState === 2) {
        // Refused (401, 404, 503) or ended for good: EventSource will not retry; a new one resumes
        // later, backing off as the socket does.
        this.sources.delete(key);
        const attempt = (this.sseAttempts.get(key) || 0) + 1;
        this.sseAttempts.set(key, attempt);
        const delay = backoffDelay(attempt, this.random);
        this.setStatus("reconnecting", { transport: "sse", delay, retryAt: Date.now() + delay, attempt });
        const timer = this.timers.setTimeout(() => {
          this.sseTimers.delete(timer);
          if (!this.closedByUser && this.subscriptions.has(key) && !this.sources.has(key)) this.openStream(key);
        }, delay);
        this.sseTimers.add(timer);
      } else {
        this.setStatus("reconnecting", { transport: "sse" }); // EventSource retries by itself
      }
    };
    const onSseEvent = (message) => this.onSseEvent(key, message);
    for (const name of SSE_EVENTS) source.addEventListener(name, onSseEvent);
  }

  closeStream(key) {
    const source = this.sources.get(key);
    if (source) source.close();
    this.sources.delete(key);
  }

  onSseEvent(key, message) {
    let data;
    try {
      data = JSON.parse(message.data);
    } catch (error) {
      return;
    }
    if (message.type === "snapshot") {
      const subscription = this.subscriptions.get(key);
      if (subscription) subscription.lastSequence = data.last_event_sequence;
      this.call("onSnapshot", data, { resync: Boolean(data.resync), campaignId: key });
    } else if (message.type === "stream.error") {
      this.call("onError", { type: "error", ...data });
    } else if (message.type === "system.notice") {
      this.call("onNotice", { type: "system.notice", ...data });
    } else {
      this.onMessage(JSON.stringify({ type: "event", ...data }));
    }
  }

  // --- connection ------------------------------------------------------------------------------------

  async open() {
    if (this.opening || this.socket) return; // a retry timer and an "online" event may both fire
    this.setStatus(this.attempt === 0 ? "connecting" : "reconnecting", { attempt: this.attempt });
    let url;
    this.opening = true;
    try {
      url = await this.url();
    } catch (error) {
      this.scheduleReconnect();
      return;
    } finally {
      this.opening = false;
    }
    if (this.closedByUser || this.transport === "sse") return; // closed (or moved to SSE) meanwhile
    const socket = new this.WebSocket(url);
    this.socket = socket;
    socket.opened = false;
    socket.onopen = () => {
      socket.opened = true;
      this.everOpened = true;
      this.onOpen(socket);
    };
    socket.onmessage = (message) => this.onMessage(message.data);
    socket.onclose = (event) => this.onClose(socket, event);
    socket.onerror = () => {}; // a close always follows
  }

  onOpen(socket) {
    if (socket !== this.socket) return;
    this.attemptBeforeOpen = this.attempt;
    this.attempt = 0;
    this.setStatus("connected");
    for (const campaignId of this.subscriptions.keys()) this.sendSubscribe(campaignId);
    this.pingTimer = this.timers.setInterval(() => this.send({ type: "ping" }), PING_INTERVAL_MS);
  }

  onClose(socket, event) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.clearTimers();
    for (const { reject } of this.pending.values()) reject(new Error("connection closed"));
    this.pending.clear();
    if (this.closedByUser) return;
    this.neverOpened = socket.opened ? 0 : this.neverOpened + 1;
    if (this.sseUrl && this.EventSource && !this.everOpened && this.neverOpened >= SSE_FALLBACK_AFTER) {
      this.useSse(); // the upgrade never goes through (a proxy): the same streams over plain HTTP
      return;
    }
    if (event && event.code === CLOSE_UNAUTHENTICATED && !this.refreshable) {
      this.setStatus("unauthenticated", { code: event.code });
      return;
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    const offline = globalThis.navigator && globalThis.navigator.onLine === false;
    if (offline && globalThis.addEventListener) {
      this.setStatus("offline");
      const retry = () => {
        globalThis.removeEventListener("online", retry);
        if (!this.closedByUser && !this.socket) this.open();
      };
      globalThis.addEventListener("online", retry);
      return;
    }
    const delay = backoffDelay(this.attempt, this.random);
    this.attempt += 1;
    this.setStatus("reconnecting", { delay, retryAt: Date.now() + delay, attempt: this.attempt });
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      if (!this.closedByUser) this.open();
    }, delay);
  }

  clearTimers() {
    if (this.retryTimer) this.timers.clearTimeout(this.retryTimer);
    if (this.pingTimer) this.timers.clearInterval(this.pingTimer);
    this.retryTimer = this.pingTimer = null;
  }

  // --- frames ----------------------------------------------------------------------------------------

  send(frame) {
    if (this.socket && this.socket.readyState === 1) {
      this.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  sendSubscribe(campaignId) {
    const { lastSequence } = this.subscriptions.get(campaignId);
    const frame = { type: "subscribe", ...target(campaignId) };
    if (lastSequence !== null && lastSequence !== undefined) frame.last_sequence = lastSequence;
    this.send(frame);
  }

  request(frame) {
    const requestId = `r${this.nextRequest++}`;
    return new Promise((resolve, reject) => {
      if (!this.send({ ...frame, request_id: requestId })) {
        reject(new Error("not connected"));
        return;
      }
      this.pending.set(requestId, { resolve, reject });
    });
  }

  onMessage(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (error) {
      return;
    }
    const waiting = frame.request_id && this.pending.get(frame.request_id);
    if (waiting && frame.type !== "subscribed") {
      this.pending.delete(frame.request_id);
      if (frame.type === "error") waiting.reject(Object.assign(new Error(frame.message), { code: frame.code }));
      else waiting.resolve(frame);
    }
    switch (frame.type) {
      case "subscribed":
        return this.onSubscribed(frame);
      case "event":
        return "sequence" in frame ? this.onEvent(frame) : this.call("onChunk", frame);
      case "snapshot":
        return this.onSnapshot(frame);
      case "system.notice":
        return this.call("onNotice", frame);
      case "error":
        if (frame.code === "unauthenticated" || frame.code === "token_expired") this.refreshable = frame.code === "token_expired";
        // Over the user's connection cap: the socket opened only to say so (close 1008 follows). The
        // backoff goes on from where it stood, or a tab too many would reconnect at once, for ever.
        if (frame.code === "too_many_connections") this.attempt = this.attemptBeforeOpen;
        if (!waiting) this.call("onError", frame);
        return undefined;
      default:
        return undefined;
    }
  }

  onSubscribed(frame) {
    const subscription = this.subscriptions.get(keyOf(frame));
    if (subscription && (subscription.lastSequence === null || subscription.lastSequence === undefined)) {
      subscription.lastSequence = frame.last_sequence;
    }
    this.call("onSubscribed", frame);
  }

  onEvent(frame) {
    const subscription = this.subscriptions.get(keyOf(frame));
    if (!subscription) return;
    if (subscription.lastSequence !== null && frame.sequence <= subscription.lastSequence) return; // duplicate
    subscription.lastSequence = frame.sequence;
    this.call("onEvent", frame);
  }

  onSnapshot(frame) {
    const subscription = this.subscriptions.get(keyOf(frame));
    if (frame.resync && subscription) subscription.lastSequence = frame.snapshot.last_event_sequence;
    this.call("onSnapshot", frame.snapshot, { resync: Boolean(frame.resync), campaignId: keyOf(frame) });
  }

  setStatus(status, detail = {}) {
    this.status = status;
    this.call("onStatus", status, detail);
  }

  call(name, ...args) {
    const callback = this.options[name];
    if (typeof callback === "function") callback(...args);
  }
}
