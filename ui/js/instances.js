// The instances list (live from the events websocket) and the create form.

import { get, run, events, enc, bytes } from "./api.js";
import { h, mount, button, errorBox, table, statusBadge } from "./dom.js";

export function list(view) {
  const err = errorBox();
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  mount(view,
    h("div", { class: "bar" }, h("h1", {}, "Instances"), h("a", { class: "btn primary", href: "#/create" }, "Create")),
    err, body);

  let timer = null;
  const refresh = async () => {
    try {
      const all = await get("/1.0/instances?recursion=2");
      all.sort((a, b) => a.name.localeCompare(b.name));
      mount(body, table(["Name", "State", ["IPv4", "wide"], ["Memory", "wide"], ["Image", "wide"], "Actions"], all.map((i) => row(i, err, refresh))));
      err.textContent = "";
    } catch (e) {
      err.textContent = e.message;
    }
  };
  const soon = () => { clearTimeout(timer); timer = setTimeout(refresh, 100); };
  refresh();
  const ev = events("lifecycle", (e) => {
    if (String(e.metadata?.source || "").startsWith("/1.0/instances")) soon();
  });
  return () => { ev.close(); clearTimeout(timer); };
}

function ipv4(state) {
  const out = [];
  for (const [nic, net] of Object.entries(state?.network || {})) {
    if (nic === "lo") continue;
    for (const a of net.addresses || []) if (a.family === "inet") out.push(a.address);
  }
  return out.join(" ");
}

function row(i, err, refresh) {
  const path = `/1.0/instances/${enc(i.name)}`;
  const act = (action) => () => run("PUT", `${path}/state`, { action, timeout: 30, force: action !== "start" }).then(refresh);
  const running = i.status === "Running";
  return h("tr", { "data-name": i.name },
    h("td", {}, h("a", { href: `#/i/${enc(i.name)}` }, i.name)),
    h("td", { class: "state" }, statusBadge(i.status)),
    h("td", { class: "mono wide" }, ipv4(i.state)),
    h("td", { class: "wide" }, running ? bytes(i.state?.memory?.usage) : "—"),
    h("td", { class: "muted wide" }, i.config?.["image.description"] || i.config?.["image.os"] || ""),
    h("td", { class: "actions" },
      running
        ? [button("Stop", act("stop"), { errorEl: err }), button("Restart", act("restart"), { errorEl: err })]
        : button("Start", act("start"), { errorEl: err, class: "primary" }),
      button("Delete", async () => {
        if (running) await run("PUT", `${path}/state`, { action: "stop", force: true, timeout: 30 });
        await run("DELETE", path);
        refresh();
      }, { errorEl: err, class: "danger", confirm: `Delete ${i.name}?` })));
}

export function create(view) {
  const err = errorBox();
  const images = h("select", { id: "c-image", required: true }, h("option", { value: "" }, "Loading…"));
  const profiles = h("fieldset", { class: "checks" }, h("legend", {}, "Profiles"));
  const name = h("input", { id: "c-name", placeholder: "optional", autocomplete: "off", pattern: "[A-Za-z0-9][A-Za-z0-9-]*" });
  const start = h("input", { id: "c-start", type: "checkbox", checked: true });
  const form = h("form", { class: "card form" },
    h("label", { for: "c-name" }, "Name"), name,
    h("label", { for: "c-image" }, "Image"), images,
    profiles,
    h("label", { class: "inline" }, start, " Start after creating"),
    err,
    h("div", {}, h("button", { type: "submit", class: "primary" }, "Create")));
  mount(view, h("h1", {}, "Create an instance"), form);

  get("/1.0/images?recursion=1").then((all) => {
    mount(images, all.length ? all.map((img) => h("option", { value: img.fingerprint },
      `${img.aliases?.[0]?.name || img.fingerprint.slice(0, 12)} — ${img.properties?.description || ""}`))
      : h("option", { value: "" }, "no local images"));
  }).catch((e) => (err.textContent = e.message));
  get("/1.0/profiles?recursion=1").then((all) => {
    for (const p of all) {
      profiles.append(h("label", { class: "inline" },
        h("input", { type: "checkbox", name: "profile", value: p.name, checked: p.name === "default" }), ` ${p.name}`));
    }
  }).catch((e) => (err.textContent = e.message));

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    err.textContent = "";
    try {
      const chosen = [...form.querySelectorAll("input[name=profile]:checked")].map((c) => c.value);
      const req = { source: { type: "image", fingerprint: images.value }, profiles: chosen };
      if (name.value) req.name = name.value;
      const op = await run("POST", "/1.0/instances", req);
      const made = name.value || (op.resources?.instances?.[0] || "").split("/").pop();
      if (start.checked && made) await run("PUT", `/1.0/instances/${enc(made)}/state`, { action: "start", timeout: 30 });
      location.hash = made ? `#/i/${enc(made)}` : "#/";
    } catch (e) {
      err.textContent = e.message;
    } finally {
      submit.disabled = false;
    }
  });
}
