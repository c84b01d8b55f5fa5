// The console's only way to gp8: the public REST API (/v1, docs/api.md) and the live stream
// (GET /v1/stream over a WebSocket). The key travels in the Authorization header, and on the
// WebSocket in the first message (a browser cannot set headers there) — never in a URL.

export class ApiError extends Error {
  constructor(status, detail, problem) {
    super(detail);
    this.status = status;
    this.problem = problem;
  }
}

// Every request gives up after this long: a hung request must not freeze a button forever.
const REQUEST_TIMEOUT_MS = 20000;

export class Api {
  constructor(key, onUnauthorized) {
    this.key = key;
    this.onUnauthorized = onUnauthorized;
  }

  async request(path, { method = "GET", body, params, accept = "application/json", raw = false } = {}) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
    }
    const headers = { Authorization: `Bearer ${this.key}`, Accept: accept };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      cache: "no-store",
    });
    if (response.status === 401 && this.onUnauthorized) this.onUnauthorized();
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      throw new ApiError(response.status, problem.detail || problem.title || response.statusText, problem);
    }
    if (raw) return response;
    if (response.status === 204) return null;
    return response.json();
  }

  get(path, params) {
    return this.request(path, { params });
  }

  post(path, body = {}) {
    return this.request(path, { method: "POST", body });
  }

  del(path) {
    return this.request(path, { method: "DELETE" });
  }

  // Every page of a listing ({"data", "next_cursor"}), up to `max` items.
  async all(path, params = {}, max = 10000) {
    const out = [];
    let cursor = null;
    do {
      const page = await this.get(path, { ...params, limit: 1000, cursor });
      out.push(...page.data);
      cursor = page.next_cursor;
    } while (cursor && out.length < max);
    return out;
  }
}

// Close codes after which reconnecting cannot help (docs/api.md, "Endings").
const FINAL_CLOSES = new Set([4400, 4401, 4403, 4404]);
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 15000;

// The live stream, resumed with `after` = the last cursor seen, so a reconnect misses nothing.
export class Stream {
  constructor(key, { onMessage, onStatus, onExpired, onUnauthorized }) {
    this.key = key;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.onExpired = onExpired;
    this.onUnauthorized = onUnauthorized;
    this.cursor = null;
    this.retryMs = RETRY_MIN_MS;
    this.stopped = false;
    this.socket = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "signed out");
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/v1/stream`);
    this.socket = socket;
    this.onStatus("connecting");
    socket.addEventListener("open", () => {
      const first = { key: this.key };
      if (this.cursor !== null) first.after = this.cursor;
      socket.send(JSON.stringify(first));
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (typeof message.cursor === "number") this.cursor = message.cursor;
      if (message.kind === "ready") {
        this.retryMs = RETRY_MIN_MS;
        this.onStatus("live");
      } else if (message.kind !== "error") {
        this.onMessage(message);
      }
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.onStatus("offline");
      if (this.stopped) return;
      if (event.code === 4401) {
        this.onUnauthorized();
        return;
      }
      if (FINAL_CLOSES.has(event.code)) return;
      if (event.code === 4410) {
        // Away longer than the log keeps: start afresh, and let the page reload what it shows.
        this.cursor = null;
        this.onExpired();
      }
      this.timer = setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    });
  }
}
