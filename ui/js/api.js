// The API client: LXD's envelope in, errors out as exceptions carrying the API's text.

// On the loopback UI listener a session is the cookie plus a key kept in this origin's
// storage (a login leaves it in the fragment once); over HTTPS there is none.
const KEY = "hutch-ui-key";
if (location.hash.startsWith("#key=")) {
  localStorage.setItem(KEY, location.hash.slice(5));
  history.replaceState(null, "", `${location.pathname}${location.search}#/`);
}
const sessionKey = () => (location.protocol === "http:" ? localStorage.getItem(KEY) : null);

// Headers every request of the page sends.
export function authHeaders(headers = {}) {
  const key = sessionKey();
  return key ? { ...headers, "X-Hutch-UI-Key": key } : headers;
}

// fetch() with the session's key.
export function apiFetch(path, init = {}) {
  return fetch(path, { ...init, credentials: "same-origin", headers: authHeaders(init.headers) });
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
  }
}

async function envelope(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    throw new ApiError(resp.status, `HTTP ${resp.status} ${resp.statusText}`);
  }
  if (body.type === "error" || resp.status >= 400) {
    throw new ApiError(resp.status, body.error || `HTTP ${resp.status}`);
  }
  return body;
}

export async function request(method, path, data, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (data !== undefined) {
    if (data instanceof Blob || data instanceof ArrayBuffer || typeof data === "string") {
      init.body = data;
    } else {
      init.body = JSON.stringify(data);
      init.headers["Content-Type"] = "application/json";
    }
  }
  const resp = await apiFetch(path, init);
  return envelope(resp);
}

export const get = async (path) => (await request("GET", path)).metadata;

// A request whose answer may be an operation: waits for it, throws its error.
export async function run(method, path, data, headers) {
  const body = await request(method, path, data, headers);
  if (body.type !== "async") return body.metadata;
  return wait(body.operation);
}

export async function wait(opPath) {
  for (;;) {
    const op = (await request("GET", `${opPath}/wait?timeout=30`)).metadata;
    if (op.status_code === 200) return op;
    if (op.status_code >= 400) throw new ApiError(op.status_code, op.err || op.status);
  }
}

export const enc = encodeURIComponent;

// A websocket's URL; browsers set no headers on websockets, so the key goes in the query.
export function wsURL(path) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const key = sessionKey();
  const auth = key ? `${path.includes("?") ? "&" : "?"}ui_key=${enc(key)}` : "";
  return `${proto}//${location.host}${path}${auth}`;
}

// The events websocket, reconnecting; `onEvent` gets each parsed event.
export function events(types, onEvent) {
  let ws;
  let closed = false;
  const open = () => {
    ws = new WebSocket(wsURL(`/1.0/events?type=${types}`));
    ws.onmessage = (m) => {
      try {
        onEvent(JSON.parse(m.data));
      } catch {
        /* not an event */
      }
    };
    ws.onclose = () => {
      if (!closed) setTimeout(open, 2000);
    };
  };
  open();
  return { close: () => { closed = true; ws.close(); } };
}

export function bytes(n) {
  if (n == null || n < 0) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}
