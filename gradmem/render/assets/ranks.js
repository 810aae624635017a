/* report.html of a multi-process run: the envelope of all ranks, one lane per rank on a
   shared y axis, and the ranks table. Hand-written SVG; names go in as text only. */
(function () {
  "use strict";
  const C = gradmemCommon;
  const data = JSON.parse(document.getElementById("gradmem-data").textContent);
  const ranks = Object.keys(data.lanes);
  const W = 1100, M = { l: 70, r: 16, t: 10, b: 34 };
  const xmax = Math.max(1, ...ranks.map(r => Math.max(...data.lanes[r].x)), ...data.envelope.x.filter(v => v !== null));
  const ymax = Math.max(1, ...ranks.map(r => Math.max(...data.lanes[r].y)));
  const yTicks = C.niceBytesTicks(ymax);
  const ytop = Math.max(ymax * 1.08, yTicks[yTicks.length - 1]);

  function frame(h) {
    const s = C.svg("svg", { viewBox: `0 0 ${W} ${h}`, height: h });
    const sx = x => M.l + (W - M.l - M.r) * x / xmax;
    const sy = y => h - M.b - (h - M.t - M.b) * y / ytop;
    const g = C.svg("g", { class: "grid" });
    yTicks.forEach(v => {
      g.appendChild(C.svg("line", { x1: M.l, x2: W - M.r, y1: sy(v), y2: sy(v) }));
      g.appendChild(C.svg("text", { x: M.l - 6, y: sy(v) + 4, "text-anchor": "end", fill: "#555" }, C.bytes(v)));
    });
    s.appendChild(g);
    const ax = C.svg("g", { class: "axis" });
    const every = Math.max(1, Math.ceil(data.anchors.length / 7));   // every anchor a tick, some labelled
    data.anchors.forEach((label, k) => {
      const x = sx(k + 1);
      const tick = C.svg("line", { x1: x, x2: x, y1: M.t, y2: h - M.b });
      tick.appendChild(C.svg("title", {}, `anchor ${k + 1}: ${label}`));
      ax.appendChild(tick);
      if (k % every) return;
      const t = C.svg("text", { x: x + 3, y: h - M.b + 14, "text-anchor": "start" }, label);
      t.appendChild(C.svg("title", {}, `anchor ${k + 1}: ${label}`));
      ax.appendChild(t);
    });
    s.appendChild(ax);
    return { s, sx, sy };
  }

  function path(xs, ys, sx, sy) { // a step line: the value holds until the next step
    let d = "";
    xs.forEach((x, i) => {
      if (ys[i] === null) return;
      d += (d ? "H" + sx(x).toFixed(1) + "V" : "M" + sx(x).toFixed(1) + ",") + sy(ys[i]).toFixed(1);
    });
    return d;
  }

  function envelope() {
    const h = 320, { s, sx, sy } = frame(h), e = data.envelope;
    let top = "", bottom = "";
    e.x.forEach((x, i) => { if (e.max[i] !== null) top += (top ? "L" : "M") + sx(x).toFixed(1) + "," + sy(e.max[i]).toFixed(1); });
    for (let i = e.x.length - 1; i >= 0; i--) if (e.min[i] !== null) bottom += "L" + sx(e.x[i]).toFixed(1) + "," + sy(e.min[i]).toFixed(1);
    if (top) s.appendChild(C.svg("path", { class: "band", d: top + bottom + "Z" }));
    ranks.forEach(r => {
      const l = data.lanes[r];
      s.appendChild(C.svg("path", { class: "lane-line", stroke: data.colors[r], d: path(l.x, l.y, sx, sy), opacity: 0.85 }));
    });
    s.appendChild(C.svg("path", { class: "median", d: path(e.x, e.median, sx, sy) }));
    document.getElementById("envelope-box").appendChild(s);
    const legend = document.getElementById("legend");
    ranks.forEach(r => {
      const item = C.el("span");
      item.appendChild(C.el("span", { class: "swatch", style: `background:${data.colors[r]}` }));
      item.appendChild(document.createTextNode(`rank ${r}` + (String(data.worst) === r ? " (worst)" : "")));
      legend.appendChild(item);
    });
    const med = C.el("span");
    med.appendChild(C.el("span", { class: "line-key", style: "border-top-style:dashed" }));
    med.appendChild(document.createTextNode("median of the ranks"));
    legend.appendChild(med);
  }

  function lanes() {
    const box = document.getElementById("lanes-box");
    data.ranks.forEach(row => {
      const r = String(row.rank), h = 150, { s, sx, sy } = frame(h);
      const label = row.peak_bytes === null ? `rank ${r}: ${row.status}` :
        `rank ${r}: peak ${C.bytes(row.peak_bytes)} at step ${row.peak_step} (${row.peak_op})` +
        (row.status === "complete" ? "" : ` [${row.status}]`) + (String(data.worst) === r ? " (worst rank)" : "");
      s.appendChild(C.svg("text", { class: "lane-label", x: M.l + 6, y: M.t + 12, fill: data.colors[r] || "#555" }, label));
      const l = data.lanes[r];
      if (l) {
        s.appendChild(C.svg("path", { class: "lane-line", stroke: data.colors[r], d: path(l.x, l.y, sx, sy) }));
        const i = l.y.indexOf(Math.max(...l.y));
        const dot = C.svg("circle", { cx: sx(l.x[i]), cy: sy(l.y[i]), r: 4, fill: data.colors[r] });
        dot.appendChild(C.svg("title", {}, `rank ${r} peak: ${C.bytes(l.y[i])} at step ${l.step[i]}, ${l.op[i]}`));
        s.appendChild(dot);
      }
      box.appendChild(s);
    });
  }

  function table() {
    const t = document.getElementById("ranks-table");
    const cols = ["rank", "status", "host", "device", "backend", "peak_bytes", "allocator_peak_bytes", "peak_step",
      "peak_op", "headroom_bytes"];
    const notRoles = ["peak_bytes", "peak_source", "peak_step", "peak_op", "peak_phase", "peak_x"];
    const roleCols = Object.keys(data.ranks[0] || {}).filter(k => k.startsWith("peak_") && !notRoles.includes(k)
      && data.ranks.some(row => row[k]));
    const head = C.el("tr");
    cols.concat(roleCols).forEach(c => head.appendChild(C.el("th", {}, c.replace(/^peak_(?!bytes|step|op)/, "at peak: "))));
    head.appendChild(C.el("th", {}, "report"));
    t.appendChild(C.el("thead")).appendChild(head);
    const body = t.appendChild(C.el("tbody"));
    data.ranks.forEach(row => {
      const tr = C.el("tr", String(row.rank) === String(data.worst) ? { class: "worst" } : {});
      cols.concat(roleCols).forEach(c => {
        const v = row[c];
        const isBytes = /bytes$/.test(c) || roleCols.includes(c);
        tr.appendChild(C.el("td", isBytes ? { class: "num" } : {}, v === null || v === undefined ? "" : isBytes ? C.bytes(v) : v));
      });
      const link = C.el("td");
      if (row.peak_bytes !== null) link.appendChild(C.el("a", { href: `rank${Number(row.rank)}/report.html` }, `rank${Number(row.rank)}/`));
      tr.appendChild(link);
      body.appendChild(tr);
    });
  }

  envelope();
  lanes();
  table();
})();
