// CPU and memory of one instance, sampled from its state every 2 s (cgroup counters the
// daemon reads without entering the container), drawn as small SVG line graphs.

import { get, bytes } from "./api.js";

const POINTS = 60;
const EVERY_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

function chart(fig) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${POINTS - 1} 100`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const area = document.createElementNS(SVG, "polygon");
  const line = document.createElementNS(SVG, "polyline");
  svg.append(area, line);
  const label = document.createElement("span");
  label.className = "now";
  fig.append(svg, label);
  return (values, max, text) => {
    const top = Math.max(max, 1e-9);
    // One sample is drawn as a flat line from the left edge until more come.
    const shown = values.length === 1 ? [values[0], values[0]] : values;
    const first = POINTS - shown.length;
    const pts = shown.map((v, i) => `${i + first},${(100 - (v / top) * 95).toFixed(2)}`).join(" ");
    line.setAttribute("points", pts);
    area.setAttribute("points", `${first},100 ${pts} ${POINTS - 1},100`);
    label.textContent = text;
    svg.setAttribute("aria-label", `${fig.querySelector("figcaption").textContent}: ${text}`);
  };
}

export function sampler(path, cpuFig, memFig) {
  const drawCpu = chart(cpuFig);
  const drawMem = chart(memFig);
  const cpu = [];
  const mem = [];
  let last = null;
  let timer = null;
  const push = (arr, v) => { arr.push(v); if (arr.length > POINTS) arr.shift(); };
  async function tick() {
    try {
      const s = await get(`${path}/state`);
      const now = performance.now();
      const usage = s.cpu?.usage ?? 0;
      if (last && s.status === "Running") {
        const pct = Math.max(0, ((usage - last.usage) / ((now - last.at) * 1e6)) * 100);
        push(cpu, pct);
      } else push(cpu, 0);
      last = { usage, at: now };
      push(mem, s.memory?.usage ?? 0);
      drawCpu(cpu, Math.max(100, ...cpu), `${cpu[cpu.length - 1].toFixed(1)} %`);
      drawMem(mem, Math.max(...mem, s.memory?.usage_peak ?? 0), bytes(mem[mem.length - 1]));
    } catch { /* the next tick tries again */ }
    timer = setTimeout(tick, EVERY_MS);
  }
  tick();
  return { stop: () => clearTimeout(timer) };
}
