// A tiny element builder and the few widgets every page shares.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

// A button that runs `action`, disabled while it runs, showing its error in `errorEl`.
export function button(label, action, opts = {}) {
  const b = h("button", { type: "button", class: opts.class, title: opts.title }, label);
  b.addEventListener("click", async () => {
    if (opts.confirm && !confirm(opts.confirm)) return;
    b.disabled = true;
    try {
      await action();
      if (opts.errorEl) opts.errorEl.textContent = "";
    } catch (e) {
      if (opts.errorEl) opts.errorEl.textContent = e.message;
      else toast(e.message, true);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

export function errorBox() {
  return h("p", { class: "error", role: "alert", "aria-live": "polite" });
}

export function toast(text, bad = false) {
  const t = h("div", { class: bad ? "toast bad" : "toast", role: "status" }, text);
  document.body.append(t);
  setTimeout(() => t.remove(), 4000);
}

// A table; a header given as [text, class] marks its column (`wide`: hidden on phones).
export function table(headers, rows) {
  return h("div", { class: "scroll" },
    h("table", {},
      h("thead", {}, h("tr", {}, headers.map((x) => Array.isArray(x) ? h("th", { scope: "col", class: x[1] }, x[0]) : h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "none")))));
}

export function statusBadge(status) {
  return h("span", { class: `badge ${String(status).toLowerCase()}` }, status);
}

export function tabs(items, current) {
  return h("nav", { class: "tabs", "aria-label": "sections" },
    items.map(([id, label, href]) =>
      h("a", { href, "aria-current": id === current ? "page" : null }, label)));
}
