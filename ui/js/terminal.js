// xterm.js over the API's exec and console websockets: fd 0 carries the pty both ways
// (binary frames), `control` takes window-resize messages.

import { Terminal } from "/ui/vendor/xterm.mjs";
import { FitAddon } from "/ui/vendor/addon-fit.mjs";
import { request, wsURL } from "./api.js";

let cssLoaded = false;

export function open(box) {
  if (!cssLoaded) {
    document.head.append(Object.assign(document.createElement("link"), { rel: "stylesheet", href: "/ui/vendor/xterm.css" }));
    cssLoaded = true;
  }
  const term = new Terminal({ cursorBlink: true, fontSize: 14, convertEol: false, scrollback: 5000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  try { fit.fit(); } catch { /* not laid out yet */ }
  term.focus();
  return {
    exec: (path) => attach(term, fit, `${path}/exec`, {
      command: ["/bin/sh", "-l"], environment: { TERM: "xterm-256color", HOME: "/root" },
      interactive: true, "wait-for-websocket": true, width: term.cols, height: term.rows,
    }),
    console: (path) => attach(term, fit, `${path}/console`, { type: "console", width: term.cols, height: term.rows }),
  };
}

async function attach(term, fit, path, body) {
  const exec = path.endsWith("/exec");
  const op = await request("POST", path, body);
  const fds = op.metadata?.metadata?.fds || {};
  const base = `${op.operation}/websocket?secret=`;
  const data = new WebSocket(wsURL(base + fds["0"]));
  data.binaryType = "arraybuffer";
  const control = new WebSocket(wsURL(base + fds.control));
  const encoder = new TextEncoder();
  data.onmessage = (m) => {
    if (typeof m.data === "string") { if (m.data) term.write(m.data); return; }
    term.write(new Uint8Array(m.data));
  };
  data.onclose = () => term.write("\r\n\x1b[2m[session ended]\x1b[0m\r\n");
  const input = term.onData((d) => { if (data.readyState === 1) data.send(encoder.encode(d)); });
  const resize = () => {
    try { fit.fit(); } catch { return; }
    if (control.readyState === 1) {
      control.send(JSON.stringify({ command: "window-resize", args: { width: String(term.cols), height: String(term.rows) } }));
    }
  };
  control.onopen = resize;
  window.addEventListener("resize", resize);
  return {
    close() {
      input.dispose();
      window.removeEventListener("resize", resize);
      term.dispose();
      data.onmessage = null;
      data.onclose = () => control.close();
      if (!exec || control.readyState !== 1) { data.close(); control.close(); return; }
      // The daemon keeps a session whose client went for a reconnect: end the shell
      // instead, as a closed terminal does (SIGHUP, then SIGKILL for a shell that only
      // noted it, as ash reading a line does), reading its output to the end so that the
      // operation ends with it.
      const signal = (n) => { if (control.readyState === 1) control.send(JSON.stringify({ command: "signal", signal: n })); };
      signal(1);
      setTimeout(() => signal(9), 1000);
      setTimeout(() => { data.close(); control.close(); }, 5000);
    },
  };
}
