// The page's router: `#/path` picks a view; every view renders into <main> at once and
// fills in what it fetches, so the first paint never waits for the API.

import { get } from "./api.js";
import { h, mount } from "./dom.js";

const view = document.getElementById("view");
let cleanup = null;

const routes = [
  [/^#?\/?$/, () => import("./instances.js").then((m) => m.list(view))],
  [/^#\/create$/, () => import("./instances.js").then((m) => m.create(view))],
  [/^#\/i\/([^/]+)(?:\/(\w+))?$/, (name, tab) =>
    import("./instance.js").then((m) => m.show(view, decodeURIComponent(name), tab || "overview"))],
  [/^#\/networks$/, () => import("./resources.js").then((m) => m.networks(view))],
  [/^#\/storage$/, () => import("./resources.js").then((m) => m.storage(view))],
  [/^#\/images$/, () => import("./resources.js").then((m) => m.images(view))],
  [/^#\/operations$/, () => import("./resources.js").then((m) => m.operations(view))],
];

async function route() {
  if (cleanup) { try { cleanup(); } catch { /* gone */ } cleanup = null; }
  const hash = location.hash || "#/";
  for (const a of document.querySelectorAll("#nav a")) {
    const target = a.getAttribute("href");
    const here = target === "#/" ? hash === "#/" || hash.startsWith("#/i/") || hash === "#/create" : hash.startsWith(target);
    a.toggleAttribute("aria-current", here);
  }
  for (const [re, fn] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    try {
      cleanup = (await fn(...m.slice(1))) || null;
    } catch (e) {
      mount(view, h("p", { class: "error", role: "alert" }, e.message));
    }
    return;
  }
  mount(view, h("p", {}, "No such page. ", h("a", { href: "#/" }, "Instances")));
}

window.addEventListener("hashchange", () => { route(); view.focus({ preventScroll: true }); });
route();

get("/1.0").then((s) => {
  const el = document.getElementById("server");
  if (s.auth !== "trusted") {
    el.textContent = "not trusted";
    mount(view, h("section", { class: "card" },
      h("h1", {}, "Not logged in"),
      h("p", {}, "Run ", h("code", {}, "hutch ui"), " on the server for a login link, or use a client certificate this server trusts.")));
    return;
  }
  el.textContent = `${s.environment.server_name || "hutchd"} · ${s.environment.server_version || ""}`;
}).catch((e) => {
  document.getElementById("server").textContent = e.status === 403 ? "not logged in" : "";
  if (e.status === 403) {
    mount(view, h("section", { class: "card" },
      h("h1", {}, "Not logged in"),
      h("p", {}, "Run ", h("code", {}, "hutch ui"), " on the server and open the link it prints.")));
  }
});
