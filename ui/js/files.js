// A file browser on the instance's files API: list a directory, open a subdirectory,
// download a file, upload one into the directory shown, delete.

import { request, enc, apiFetch } from "./api.js";
import { h, mount, button, table } from "./dom.js";

export function browser(body, path, err) {
  let cwd = "/root";
  const where = h("input", { id: "f-path", value: cwd, "aria-label": "Directory", autocomplete: "off" });
  const go = h("form", { class: "inline-form" }, where, h("button", { type: "submit" }, "Open"));
  const upload = h("input", { type: "file", id: "f-upload", "aria-label": "File to upload" });
  const send = button("Upload", async () => {
    const file = upload.files[0];
    if (!file) throw new Error("choose a file first");
    await request("POST", `${path}/files?path=${enc(join(cwd, file.name))}`, file, {
      "Content-Type": "application/octet-stream", "X-LXD-type": "file", "X-LXD-mode": "0644",
      "X-LXD-uid": "0", "X-LXD-gid": "0", "X-LXD-write": "overwrite",
    });
    upload.value = "";
    await list(cwd);
  }, { errorEl: err, class: "primary" });
  const listing = h("div");
  mount(body, go, h("div", { class: "inline-form" }, upload, send), listing);

  go.addEventListener("submit", (ev) => { ev.preventDefault(); list(where.value).catch((e) => (err.textContent = e.message)); });

  async function open(target) {
    const resp = await apiFetch(`${path}/files?path=${enc(target)}`);
    const type = resp.headers.get("X-LXD-Type") || resp.headers.get("X-LXD-type");
    if (!resp.ok) {
      const env = await resp.json().catch(() => ({}));
      throw new Error(env.error || `HTTP ${resp.status}`);
    }
    if (type === "directory") {
      return list(target, (await resp.json()).metadata);
    }
    const blob = await resp.blob();
    const a = h("a", { href: URL.createObjectURL(blob), download: target.split("/").pop() });
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  async function list(dir, names) {
    if (!names) {
      const env = await request("GET", `${path}/files?path=${enc(dir)}`);
      if (!Array.isArray(env.metadata)) throw new Error(`${dir} is not a directory`);
      names = env.metadata;
    }
    cwd = dir.replace(/\/+$/, "") || "/";
    where.value = cwd;
    err.textContent = "";
    const rows = [];
    if (cwd !== "/") rows.push(h("tr", {}, h("td", {}, h("button", { type: "button", class: "link", onclick: () => list(parent(cwd)).catch((e) => (err.textContent = e.message)) }, "..")), h("td", {})));
    for (const n of [...names].sort()) {
      const full = join(cwd, n);
      rows.push(h("tr", { "data-name": n },
        h("td", {}, h("button", { type: "button", class: "link", onclick: () => open(full).catch((e) => (err.textContent = e.message)) }, n)),
        h("td", { class: "actions" }, button("Delete", () => request("DELETE", `${path}/files?path=${enc(full)}`).then(() => list(cwd)),
          { errorEl: err, class: "danger", confirm: `Delete ${full}?` }))));
    }
    mount(listing, table(["Name", ""], rows));
  }
  list(cwd).catch(() => list("/").catch((e) => (err.textContent = e.message)));
}

const join = (dir, name) => `${dir.replace(/\/+$/, "")}/${name}`;
const parent = (p) => p.replace(/\/[^/]+\/?$/, "") || "/";
