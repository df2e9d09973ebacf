// One instance: overview with CPU and memory graphs, terminal, console, files,
// snapshots, and the config and devices editor.

import { get, run, enc, apiFetch, events } from "./api.js";
import { h, mount, button, errorBox, table, statusBadge, tabs } from "./dom.js";

const TABS = [["overview", "Overview"], ["terminal", "Terminal"], ["console", "Console"],
  ["files", "Files"], ["snapshots", "Snapshots"], ["config", "Config"]];

export function show(view, name, tab) {
  const path = `/1.0/instances/${enc(name)}`;
  const status = h("span", { id: "i-status" });
  const err = errorBox();
  const body = h("div", { class: "tab-body" });
  mount(view,
    h("div", { class: "bar" }, h("h1", {}, name), status),
    tabs(TABS.map(([id, label]) => [id, label, `#/i/${enc(name)}${id === "overview" ? "" : "/" + id}`]), tab),
    err, body);
  get(`${path}/state`).then((s) => mount(status, statusBadge(s.status))).catch((e) => (err.textContent = e.message));
  const pages = { overview, terminal, console: consoleTab, files, snapshots, config };
  return (pages[tab] || overview)(body, name, path, err);
}

function overview(body, name, path, err) {
  const facts = h("dl", { class: "facts" });
  const cpu = h("figure", { class: "graph" }, h("figcaption", {}, "CPU"));
  const mem = h("figure", { class: "graph" }, h("figcaption", {}, "Memory"));
  const act = (action) => () => run("PUT", `${path}/state`, { action, timeout: 30, force: action !== "start" }).then(load);
  const startB = button("Start", act("start"), { errorEl: err, class: "primary" });
  const stopB = button("Stop", act("stop"), { errorEl: err });
  const restartB = button("Restart", act("restart"), { errorEl: err });
  const actions = h("div", { class: "actions" }, startB, stopB, restartB,
    button("Delete", async () => { await run("DELETE", path); location.hash = "#/"; },
      { errorEl: err, class: "danger", confirm: `Delete ${name}? (it must be stopped)` }));
  mount(body, actions, facts, h("div", { class: "graphs" }, cpu, mem));

  async function load() {
    const [i, s] = await Promise.all([get(path), get(`${path}/state`)]);
    const addrs = Object.entries(s.network || {}).filter(([n]) => n !== "lo")
      .flatMap(([n, net]) => (net.addresses || []).map((a) => `${a.address} (${n})`));
    mount(facts,
      h("dt", {}, "Status"), h("dd", {}, statusBadge(s.status)),
      h("dt", {}, "Type"), h("dd", {}, i.type),
      h("dt", {}, "Profiles"), h("dd", {}, (i.profiles || []).join(", ")),
      h("dt", {}, "Addresses"), h("dd", { class: "mono" }, addrs.join(", ") || "—"),
      h("dt", {}, "Processes"), h("dd", {}, s.processes ?? "—"),
      h("dt", {}, "Created"), h("dd", {}, new Date(i.created_at).toLocaleString()));
    document.getElementById("i-status")?.replaceChildren(statusBadge(s.status));
    const running = s.status === "Running";
    startB.hidden = running;
    stopB.hidden = !running;
    restartB.hidden = !running;
  }
  load().catch((e) => (err.textContent = e.message));

  let stopped = false;
  let graphs = null;
  import("./graph.js").then((g) => {
    if (stopped) return;
    graphs = g.sampler(path, cpu, mem);
  });
  // Started, stopped or changed elsewhere: shown at once.
  const ev = events("lifecycle", (e) => {
    if (e.metadata?.source === path) load().catch((x) => (err.textContent = x.message));
  });
  return () => { stopped = true; graphs?.stop(); ev.close(); };
}

function terminal(body, name, path, err) {
  return withTerminal(body, err, (t) => t.exec(path));
}

function consoleTab(body, name, path, err) {
  return withTerminal(body, err, (t) => t.console(path));
}

function withTerminal(body, err, start) {
  const box = h("div", { class: "terminal", id: "terminal" });
  mount(body, box);
  let session = null;
  let stopped = false;
  import("./terminal.js").then(async (t) => {
    if (stopped) return;
    session = await start(t.open(box));
  }).catch((e) => (err.textContent = e.message));
  return () => { stopped = true; session?.close(); };
}

function files(body, name, path, err) {
  return import("./files.js").then((f) => f.browser(body, path, err));
}

function snapshots(body, name, path, err) {
  const list = h("div");
  const snapName = h("input", { id: "snap-name", placeholder: "name (optional)", autocomplete: "off" });
  const form = h("form", { class: "inline-form" }, h("label", { for: "snap-name", class: "sr" }, "Snapshot name"),
    snapName, h("button", { type: "submit", class: "primary" }, "Create snapshot"));
  mount(body, form, list);
  async function load() {
    const all = await get(`${path}/snapshots?recursion=1`);
    mount(list, table(["Name", "Taken", "Stateful", "Actions"], all.map((s) => h("tr", { "data-name": s.name },
      h("td", {}, s.name),
      h("td", {}, new Date(s.created_at).toLocaleString()),
      h("td", {}, s.stateful ? "yes" : "no"),
      h("td", { class: "actions" },
        button("Restore", () => run("PUT", path, { restore: s.name }).then(load), { errorEl: err, confirm: `Restore ${s.name}?` }),
        button("Delete", () => run("DELETE", `${path}/snapshots/${enc(s.name)}`).then(load), { errorEl: err, class: "danger", confirm: `Delete ${s.name}?` }))))));
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await run("POST", `${path}/snapshots`, snapName.value ? { name: snapName.value } : {});
      snapName.value = "";
      err.textContent = "";
      await load();
    } catch (e) { err.textContent = e.message; }
  });
  load().catch((e) => (err.textContent = e.message));
}

function config(body, name, path, err) {
  const rows = h("div");
  const key = h("input", { id: "cfg-key", placeholder: "key, e.g. limits.memory", autocomplete: "off" });
  const value = h("input", { id: "cfg-value", placeholder: "value (empty removes)", autocomplete: "off" });
  const setErr = h("p", { class: "error", id: "cfg-error", role: "alert" });
  const setForm = h("form", { class: "inline-form", id: "cfg-form" },
    h("label", { for: "cfg-key", class: "sr" }, "Key"), key,
    h("label", { for: "cfg-value", class: "sr" }, "Value"), value,
    h("button", { type: "submit", class: "primary" }, "Set"));
  const editor = h("textarea", { id: "cfg-json", rows: 14, spellcheck: "false", "aria-label": "Config and devices as JSON" });
  const jsonErr = h("p", { class: "error", id: "cfg-json-error", role: "alert" });
  const save = h("button", { type: "button", class: "primary" }, "Save JSON");
  mount(body, h("h2", {}, "Config"), setForm, setErr, rows,
    h("h2", {}, "Config, devices and profiles"), editor, jsonErr, save);

  let current = null;
  let etag = null;
  async function load() {
    const resp = await apiFetch(path);
    const env = await resp.json();
    if (env.type === "error") throw new Error(env.error);
    current = env.metadata;
    etag = resp.headers.get("ETag");
    const cfg = Object.entries(current.config || {}).filter(([k]) => !k.startsWith("volatile."));
    mount(rows, table(["Key", "Value"], cfg.map(([k, v]) => h("tr", {}, h("td", { class: "mono" }, k), h("td", { class: "mono" }, v)))));
    editor.value = JSON.stringify({ config: current.config, devices: current.devices, profiles: current.profiles, description: current.description }, null, 2);
  }
  setForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    setErr.textContent = "";
    try {
      await run("PATCH", path, { config: { [key.value]: value.value } });
      key.value = ""; value.value = "";
      await load();
    } catch (e) { setErr.textContent = e.message; }
  });
  save.addEventListener("click", async () => {
    jsonErr.textContent = "";
    let edited;
    try { edited = JSON.parse(editor.value); } catch (e) { jsonErr.textContent = `Invalid JSON: ${e.message}`; return; }
    try {
      const put = { architecture: current.architecture, ephemeral: current.ephemeral, stateful: current.stateful, ...edited };
      await run("PUT", path, put, etag ? { "If-Match": etag } : {});
      await load();
    } catch (e) { jsonErr.textContent = e.message; }
  });
  load().catch((e) => (err.textContent = e.message));
}

