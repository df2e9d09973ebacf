// Networks with their DHCP leases, storage pools with their volumes, images, operations.

import { get, run, request, enc, bytes } from "./api.js";
import { h, mount, button, errorBox, table } from "./dom.js";

function page(view, title) {
  const err = errorBox();
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  mount(view, h("h1", {}, title), err, body);
  return { err, body, fail: (e) => (err.textContent = e.message) };
}

export function networks(view) {
  const { body, fail } = page(view, "Networks");
  (async () => {
    const all = await get("/1.0/networks?recursion=1");
    const sections = await Promise.all(all.map(async (n) => {
      const leases = n.managed ? await get(`/1.0/networks/${enc(n.name)}/leases`).catch(() => []) : [];
      return h("section", { class: "card" },
        h("h2", {}, n.name, " ", h("span", { class: "muted" }, `${n.type}${n.managed ? ", managed" : ""}`)),
        h("p", { class: "mono" }, [n.config?.["ipv4.address"], n.config?.["ipv6.address"]].filter(Boolean).join("  ")),
        h("p", { class: "muted" }, `Used by ${(n.used_by || []).length}`),
        n.managed ? table(["Host", "Address", ["MAC", "wide"], ["Type", "wide"]], leases.map((l) =>
          h("tr", {}, h("td", {}, l.hostname), h("td", { class: "mono" }, l.address), h("td", { class: "mono wide" }, l.hwaddr), h("td", { class: "wide" }, l.type)))) : null);
    }));
    mount(body, sections.length ? sections : h("p", { class: "muted" }, "No networks."));
  })().catch(fail);
}

export function storage(view) {
  const { body, fail } = page(view, "Storage");
  (async () => {
    const pools = await get("/1.0/storage-pools?recursion=1");
    const sections = await Promise.all(pools.map(async (p) => {
      const [res, vols] = await Promise.all([
        get(`/1.0/storage-pools/${enc(p.name)}/resources`).catch(() => null),
        get(`/1.0/storage-pools/${enc(p.name)}/volumes?recursion=1`).catch(() => []),
      ]);
      const space = res?.space ? `${bytes(res.space.used)} of ${bytes(res.space.total)} used` : "";
      return h("section", { class: "card" },
        h("h2", {}, p.name, " ", h("span", { class: "muted" }, p.driver)),
        h("p", {}, space),
        table(["Type", "Name", "Used by"], vols.map((v) =>
          h("tr", {}, h("td", {}, v.type), h("td", { class: "mono" }, v.name), h("td", {}, (v.used_by || []).length)))));
    }));
    mount(body, sections.length ? sections : h("p", { class: "muted" }, "No storage pools."));
  })().catch(fail);
}

export function images(view) {
  const { err, body, fail } = page(view, "Images");
  const load = async () => {
    const all = await get("/1.0/images?recursion=1");
    mount(body, table(["Alias", "Fingerprint", ["Description", "wide"], ["Size", "wide"], ["Uploaded", "wide"], ""], all.map((i) =>
      h("tr", {},
        h("td", {}, (i.aliases || []).map((a) => a.name).join(", ")),
        h("td", { class: "mono" }, i.fingerprint.slice(0, 12)),
        h("td", { class: "wide" }, i.properties?.description || ""),
        h("td", { class: "wide" }, bytes(i.size)),
        h("td", { class: "wide" }, new Date(i.uploaded_at).toLocaleDateString()),
        h("td", { class: "actions" }, button("Delete", () => run("DELETE", `/1.0/images/${i.fingerprint}`).then(load),
          { errorEl: err, class: "danger", confirm: `Delete image ${i.fingerprint.slice(0, 12)}?` }))))));
  };
  load().catch(fail);
}

export function operations(view) {
  const { err, body, fail } = page(view, "Operations");
  const load = async () => {
    const all = await get("/1.0/operations?recursion=1");
    const ops = Object.values(all || {}).flat().sort((a, b) => b.created_at.localeCompare(a.created_at));
    mount(body, table(["Description", "Status", ["Created", "wide"], ["Resources", "wide"], ""], ops.map((o) =>
      h("tr", {},
        h("td", {}, o.description),
        h("td", {}, o.status, o.err ? h("span", { class: "error" }, ` ${o.err}`) : null),
        h("td", { class: "wide" }, new Date(o.created_at).toLocaleTimeString()),
        h("td", { class: "mono wide" }, Object.values(o.resources || {}).flat().filter((r) => !r.startsWith("/1.0/containers/")).join(" ")),
        h("td", { class: "actions" }, o.status === "Running" && o.may_cancel
          ? button("Cancel", () => request("DELETE", `/1.0/operations/${o.id}`).then(load), { errorEl: err }) : null)))));
  };
  load().catch(fail);
  const timer = setInterval(() => load().catch(fail), 3000);
  return () => clearInterval(timer);
}
