/* report.html: hand-written, no library. Reads the JSON island, draws the memory chart
   (canvas), the lifetimes (SVG) and the two tables. Every name goes in as text
   (textContent / createTextNode), never as markup. */
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("gradmem-data").textContent);
  const M = D.memory, S = D.storages, ROLES = D.roles.map(r => r.role);
  const COLOR = {};
  D.roles.forEach(r => { COLOR[r.role] = r.color; });
  const state = { mode: "step", view: null, selected: -1, drag: null, hover: null, hideFixed: false, log: false, labels: [] };
  const FIXED = new Set(["input", "parameter"]);   // alive before forward: hidden on request
  function shownRoles() { return state.hideFixed ? ROLES.filter(r => !FIXED.has(r)) : ROLES; }
  const byId = new Map(S.id.map((id, i) => [id, i]));
  const lastStep = M.x1.length ? M.x1[M.x1.length - 1] : 0;

  // -- helpers -----------------------------------------------------------------------------
  const { bytes, withCode, el, svg, upper, niceTicks, niceBytesTicks, PHASE_FILL } = gradmemCommon;
  function liveAt(step, role) { // storages (known to the page) alive after `step` in `role`
    const out = [];
    for (let i = 0; i < S.id.length; i++) {
      if (S.role[i] === role && S.a[i] <= step && (S.f[i] === -1 || S.f[i] > step)) out.push(i);
    }
    return out.sort((a, b) => S.bytes[b] - S.bytes[a]);
  }

  // -- x coordinates: steps, or milliseconds since the first step ---------------------------
  const timeEnd = M.t_end > 0 ? M.t_end * 1.01 : 1;
  function left(i) { return state.mode === "step" ? M.x0[i] : M.t[i]; }
  function right(i) {
    if (state.mode === "step") return M.x1[i] + 1;
    return i + 1 < M.t.length ? M.t[i + 1] : timeEnd;
  }
  function fullDomain() { return state.mode === "step" ? [0, lastStep + 1] : [0, timeEnd]; }
  function domain() { return state.view || fullDomain(); }
  function stepX(step) { // a step's start in the current mode
    if (state.mode === "step") return step;
    return left(upper(M.x0, step));
  }
  function stepAt(x) { // the step under a coordinate of the current mode
    if (state.mode === "step") return Math.floor(x);
    return M.x0[upper(M.t, x)];
  }

  // -- the memory chart ---------------------------------------------------------------------
  const canvas = document.getElementById("chart");
  const tip = document.getElementById("tooltip");
  const PAD = { l: 64, r: 70, t: 92, b: 30 };
  const LABEL_FONT = "10px sans-serif", LABEL_H = 10, SLANT = Math.SQRT1_2;

  function layout() {
    const w = canvas.clientWidth, h = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
    const [d0, d1] = domain();
    const vis = visibleBuckets(d0, d1);
    let ymax = 1;
    for (let i = vis[0]; i <= vis[1]; i++) ymax = Math.max(ymax, state.hideFixed ? stackTop(i) : M.hi[i]);
    ymax *= 1.1;
    const frac = state.log ? v => Math.log10(1 + Math.max(v, 0)) / Math.log10(1 + ymax) : v => v / ymax;
    return {
      w, h, dpr, d0, d1, ymax, vis,
      x: v => PAD.l + (v - d0) / (d1 - d0) * (w - PAD.l - PAD.r),
      y: v => h - PAD.b - frac(v) * (h - PAD.t - PAD.b),
      inv: px => d0 + (px - PAD.l) / (w - PAD.l - PAD.r) * (d1 - d0),
    };
  }
  function stackTop(i) { return shownRoles().reduce((s, r) => s + M.by_role[r][i], 0); }
  function visibleBuckets(d0, d1) {
    const lefts = state.mode === "step" ? M.x0 : M.t;
    if (!lefts.length) return [0, -1];
    return [upper(lefts, d0), upper(lefts, d1)];
  }

  function drawPhases(ctx, L) {
    D.phases.forEach(p => {
      const a = state.mode === "step" ? p.x0 : p.t0, b = state.mode === "step" ? p.x1 + 1 : p.t1;
      const x0 = Math.max(PAD.l, L.x(a)), x1 = Math.min(L.w - PAD.r, L.x(b));
      if (x1 <= x0) return;
      ctx.fillStyle = PHASE_FILL[p.phase] || PHASE_FILL.setup;
      ctx.fillRect(x0, PAD.t, x1 - x0, L.h - PAD.t - PAD.b);
    });
  }
  function phaseLabels(ctx, L) {
    ctx.fillStyle = "#555"; ctx.font = "11px sans-serif"; ctx.textAlign = "left";
    D.phases.forEach(p => {
      const a = state.mode === "step" ? p.x0 : p.t0, b = state.mode === "step" ? p.x1 + 1 : p.t1;
      const x0 = Math.max(PAD.l, L.x(a)), x1 = Math.min(L.w - PAD.r, L.x(b));
      if (x1 - x0 > 60) ctx.fillText(p.phase, x0 + 4, PAD.t + 12);
    });
  }
  function drawStacks(ctx, L) {
    for (let i = L.vis[0]; i <= L.vis[1]; i++) {
      const x0 = Math.max(PAD.l, L.x(left(i))), x1 = Math.min(L.w - PAD.r, L.x(right(i)));
      const w = Math.max(x1 - x0, 0.6);
      let base = 0;
      shownRoles().forEach(r => {
        const v = M.by_role[r][i];
        if (!v) return;
        ctx.fillStyle = COLOR[r];
        const yTop = L.y(base + v), yBot = L.y(base);
        ctx.fillRect(x0, yTop, w, yBot - yTop);
        base += v;
      });
    }
  }
  function drawEnvelope(ctx, L) { // the exact highest (and, when bucketed, lowest) live bytes
    const line = (arr, style, dash) => {
      ctx.beginPath(); ctx.strokeStyle = style; ctx.lineWidth = 1.3; ctx.setLineDash(dash);
      for (let i = L.vis[0]; i <= L.vis[1]; i++) {
        const x0 = Math.max(PAD.l, L.x(left(i))), x1 = Math.min(L.w - PAD.r, L.x(right(i))), y = L.y(arr[i]);
        if (i === L.vis[0]) ctx.moveTo(x0, y); else ctx.lineTo(x0, y);
        ctx.lineTo(x1, y);
      }
      ctx.stroke(); ctx.setLineDash([]);
    };
    if (state.hideFixed) return;   // the envelope counts every role: not drawn over a partial stack
    line(M.hi, "#222", []);
    if (M.bucket_steps > 1) line(M.lo, "#777", [3, 3]);
  }
  function nodeX(n) { return state.mode === "step" ? n.step + 0.5 : n.t; }
  function longestLabel() {
    const ctx = canvas.getContext("2d");
    ctx.font = LABEL_FONT;
    return D.nodes.reduce((m, n) => Math.max(m, ctx.measureText(n.name).width), 0);
  }
  function labelRoom() { // room above and right of the plot for the slanted labels of the longest node name
    const longest = longestLabel() * SLANT;
    PAD.t = Math.min(Math.max(92, Math.ceil(longest + LABEL_H + 14)), 200);
    PAD.r = Math.min(Math.max(70, Math.ceil(longest + 8)), 180);
  }
  function drawNodes(ctx, L) {
    ctx.font = LABEL_FONT; ctx.textAlign = "left";
    const placed = [], room = (PAD.t - 10) / SLANT;   // the longest label that fits above the plot
    D.nodes.forEach((n, k) => {
      const x = L.x(nodeX(n));
      if (x < PAD.l || x > L.w - PAD.r) return;
      const sel = k === state.selected;
      ctx.strokeStyle = sel ? "#111" : "rgba(120,60,0,0.35)"; ctx.lineWidth = sel ? 2 : 1;
      ctx.beginPath(); ctx.moveTo(x, PAD.t - 4); ctx.lineTo(x, sel ? L.h - PAD.b : PAD.t + 6); ctx.stroke();
      // slanted 45 degrees, two labels overlap unless their anchors are a label's height / sin 45 apart
      const last = placed[placed.length - 1];
      if (sel || !last || x - last.x >= LABEL_H / SLANT + 1) {
        let text = n.name;
        while (text.length > 4 && ctx.measureText(text).width > room) text = text.slice(0, -2);
        if (text !== n.name) text = text.slice(0, -1) + "\u2026";
        const w = ctx.measureText(text).width;
        if (sel && last && x - last.x < LABEL_H / SLANT + 1) placed.pop();
        placed.push({ x: x, text: text, w: w, k: k, sel: sel });
      }
    });
    placed.forEach(p => {
      ctx.save(); ctx.translate(p.x + 2, PAD.t - 7); ctx.rotate(-Math.PI / 4);
      ctx.fillStyle = p.sel ? "#111" : "#7a4a12";
      ctx.fillText(p.text, 0, 0);
      ctx.restore();
    });
    // each label's box in page pixels (the text's baseline runs up-right from its anchor)
    state.labels = placed.map(p => ({ name: D.nodes[p.k].name, text: p.text, x: p.x + 2, y: PAD.t - 7, w: p.w, h: LABEL_H }));
  }
  function drawPeak(ctx, L) {
    const p = D.peak, x = L.x(state.mode === "step" ? p.step + 0.5 : p.t), y = L.y(p.bytes);
    if (x < PAD.l || x > L.w - PAD.r) return;
    ctx.fillStyle = "#d62728"; ctx.beginPath(); ctx.arc(x, y, 4.5, 0, 2 * Math.PI); ctx.fill();
    const label = "peak " + bytes(p.bytes) + " (step " + p.step + ")";
    ctx.font = "bold 11px sans-serif"; ctx.textAlign = x > L.w - 160 ? "right" : "left";
    ctx.fillText(label, x + (ctx.textAlign === "right" ? -8 : 8), Math.max(y - 4, PAD.t + 10));
  }
  function drawAxes(ctx, L) {
    ctx.strokeStyle = "#999"; ctx.lineWidth = 1; ctx.fillStyle = "#444"; ctx.font = "11px sans-serif";
    ctx.beginPath(); ctx.moveTo(PAD.l, PAD.t); ctx.lineTo(PAD.l, L.h - PAD.b); ctx.lineTo(L.w - PAD.r, L.h - PAD.b); ctx.stroke();
    ctx.textAlign = "right";
    (state.log ? logTicks(L.ymax) : niceBytesTicks(L.ymax)).forEach(v => {
      const y = L.y(v); if (y < PAD.t) return;
      ctx.fillText(bytes(v), PAD.l - 5, y + 3);
      ctx.strokeStyle = "rgba(0,0,0,0.06)"; ctx.beginPath(); ctx.moveTo(PAD.l, y); ctx.lineTo(L.w - PAD.r, y); ctx.stroke();
    });
    ctx.textAlign = "center";
    const span = L.d1 - L.d0;
    let every = niceTicks(span, 8)[1] || span;
    if (state.mode === "step") every = Math.max(1, Math.round(every));
    for (let v = Math.ceil(L.d0 / every) * every; v <= L.d1; v += every) {
      const lab = state.mode === "step" ? String(Math.round(v)) : (v.toFixed(span < 5 ? 2 : 0) + " ms");
      ctx.fillText(lab, L.x(v), L.h - PAD.b + 14);
    }
    ctx.fillText(state.mode === "step" ? "step (op index)" : "time since the first step", (PAD.l + L.w - PAD.r) / 2, L.h - 3);
  }
  function logTicks(max) { // 1 B, 32 B, 1 KiB, 32 KiB, ... up to max
    const out = [];
    for (let v = 1; v <= max; v *= 32) out.push(v);
    return out;
  }
  function drawChart() {
    labelRoom();
    const L = layout(), ctx = canvas.getContext("2d");
    ctx.setTransform(L.dpr, 0, 0, L.dpr, 0, 0);
    ctx.clearRect(0, 0, L.w, L.h);
    drawPhases(ctx, L); drawStacks(ctx, L); phaseLabels(ctx, L); drawEnvelope(ctx, L); drawNodes(ctx, L); drawPeak(ctx, L); drawAxes(ctx, L);
    if (state.drag && state.drag.x1 !== undefined) {
      ctx.fillStyle = "rgba(31,79,209,0.15)";
      ctx.fillRect(Math.min(state.drag.x0, state.drag.x1), PAD.t, Math.abs(state.drag.x1 - state.drag.x0), L.h - PAD.t - PAD.b);
    }
    return L;
  }

  // -- hover, zoom, click on the chart ------------------------------------------------------
  function bucketAt(L, px) {
    const v = L.inv(px), lefts = state.mode === "step" ? M.x0 : M.t;
    return lefts.length ? upper(lefts, v) : -1;
  }
  function roleAt(L, i, py) {
    let base = 0;
    for (const r of shownRoles()) {
      const v = M.by_role[r][i];
      if (v && py <= L.y(base) && py >= L.y(base + v)) return r;
      base += v;
    }
    return null;
  }
  function showTip(L, px, py) {
    const i = bucketAt(L, px);
    if (i < 0 || px < PAD.l || px > L.w - PAD.r) { tip.hidden = true; return; }
    const one = M.x0[i] === M.x1[i];
    const head = one ? "step " + M.x0[i] + (M.op.length ? " \u00b7 " + M.op[i] + " (" + M.phase[i] + ")" : "")
      : "steps " + M.x0[i] + "\u2013" + M.x1[i];
    const total = ROLES.reduce((s, r) => s + M.by_role[r][i], 0);
    tip.textContent = "";
    tip.appendChild(el("div", { class: "head" }, head));
    tip.appendChild(el("div", {}, "live after: " + bytes(total) + "; highest inside: " + bytes(M.hi[i])));
    const role = roleAt(L, i, py);
    if (role) {
      const live = liveAt(M.x1[i], role);
      tip.appendChild(el("div", {}, role + ": " + bytes(M.by_role[role][i]) + " in " + live.length + " storage(s) named on this page"));
      const ul = el("ul");
      live.slice(0, 8).forEach(k => ul.appendChild(el("li", {}, S.name[k] + " " + S.shape[k] + " " + bytes(S.bytes[k]))));
      if (live.length > 8) ul.appendChild(el("li", {}, "\u2026 and " + (live.length - 8) + " more"));
      tip.appendChild(ul);
    }
    tip.hidden = false;
    const box = canvas.getBoundingClientRect();
    tip.style.left = Math.min(px + 14, box.width - 300) + "px";
    tip.style.top = Math.max(py - 10, 0) + "px";
  }
  function nearestNode(L, px) {
    let best = -1, dist = 6;
    D.nodes.forEach((n, k) => { const d = Math.abs(L.x(nodeX(n)) - px); if (d < dist) { dist = d; best = k; } });
    return best;
  }
  function pos(ev) { const b = canvas.getBoundingClientRect(); return [ev.clientX - b.left, ev.clientY - b.top]; }
  canvas.addEventListener("mousedown", ev => { state.drag = { x0: pos(ev)[0] }; });
  canvas.addEventListener("mousemove", ev => {
    const [px, py] = pos(ev);
    if (state.drag) { state.drag.x1 = px; }
    const L = drawChart();
    showTip(L, px, py);
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; state.drag = null; drawChart(); });
  canvas.addEventListener("mouseup", ev => {
    const [px] = pos(ev), drag = state.drag, L = layout();
    state.drag = null;
    if (drag && Math.abs(px - drag.x0) > 4) {
      const a = L.inv(Math.min(px, drag.x0)), b = L.inv(Math.max(px, drag.x0));
      state.view = [Math.max(a, fullDomain()[0]), Math.min(b, fullDomain()[1])];
      redraw();
    } else {
      const k = nearestNode(L, px);
      if (k >= 0) selectNode(k === state.selected ? -1 : k); else drawChart();
    }
  });
  canvas.addEventListener("dblclick", () => { state.view = null; redraw(); });
  document.querySelectorAll("input[name=xmode]").forEach(r => r.addEventListener("change", () => {
    state.mode = r.value; state.view = null; redraw();
  }));
  document.getElementById("hide-fixed").addEventListener("change", ev => { state.hideFixed = ev.target.checked; redraw(); });
  document.getElementById("log-scale").addEventListener("change", ev => { state.log = ev.target.checked; redraw(); });
  window.addEventListener("resize", () => redraw());

  function legend() {
    const box = document.getElementById("legend");
    D.roles.forEach(r => {
      const item = el("span", { title: r.meaning });
      const sw = el("span", { class: "swatch" }); sw.style.background = r.color;
      item.appendChild(sw); item.appendChild(document.createTextNode(r.role)); box.appendChild(item);
    });
    const hi = el("span"); hi.appendChild(el("span", { class: "line-key" })); hi.appendChild(document.createTextNode("highest live bytes within a step"));
    box.appendChild(hi);
    const note = document.getElementById("memory-note");
    note.textContent = "Live bytes after each step, stacked by role; shaded: forward (blue) and backward (orange); "
      + "ticks on top: backward nodes. " + (M.bucket_steps > 1
        ? "This run has " + (lastStep + 1).toLocaleString() + " steps, drawn in buckets of " + M.bucket_steps
          + " steps: the solid and dashed lines are the exact highest and lowest live bytes within each bucket."
        : "");
  }

  // -- lifetimes ----------------------------------------------------------------------------
  function stepDomain() {
    if (state.mode === "step") return domain();
    const [a, b] = domain();
    return [stepAt(a), stepAt(b) + 1];
  }
  function lifetimeRows() {
    return D.lifetime_ids.filter(id => !(state.hideFixed && FIXED.has(S.role[byId.get(id)])));
  }
  function nodeTicks(root, x, top, bottom, labelW, w) { // a tick per backward node, named where there is room
    let last = -1e9;
    D.nodes.forEach((n, k) => {
      const cx = x(n.step + 0.5);
      if (cx < labelW || cx > w - 10) return;
      const tick = svg("line", { class: "node-tick", x1: cx, x2: cx, y1: top - 6, y2: bottom, stroke: k === state.selected ? "#111" : "rgba(120,60,0,0.25)" });
      tick.appendChild(svg("title", {}, n.name + " (step " + n.step + ")"));
      root.appendChild(tick);
      if (cx - last >= LABEL_H / SLANT + 1) {
        root.appendChild(svg("text", { class: "node-label", x: cx + 2, y: top - 8, fill: "#7a4a12",
          transform: "rotate(-45 " + (cx + 2) + " " + (top - 8) + ")" }, n.name));
        last = cx;
      }
    });
  }
  function stepAxis(root, x, d0, d1, y, labelW, w) {
    root.appendChild(svg("line", { x1: labelW, x2: w - 10, y1: y, y2: y, stroke: "#999" }));
    let every = Math.max(1, Math.round(niceTicks(d1 - d0, 8)[1] || 1));
    for (let v = Math.ceil(d0 / every) * every; v <= d1; v += every) {
      const cx = x(v + 0.5);
      if (cx < labelW || cx > w - 10) continue;
      root.appendChild(svg("line", { x1: cx, x2: cx, y1: y, y2: y + 4, stroke: "#999" }));
      root.appendChild(svg("text", { class: "step-label", x: cx, y: y + 15, fill: "#444", "text-anchor": "middle" }, String(v)));
    }
    root.appendChild(svg("text", { x: (labelW + w) / 2, y: y + 29, fill: "#444", "text-anchor": "middle" }, "step"));
  }
  function endMark(g, i, b, y) {
    if (S.f[i] === -1) { // alive at the end: an arrow past the last step
      g.appendChild(svg("path", { class: "mark end-alive", d: "M" + (b + 2) + " " + (y + 1) + "l8 5.5l-8 5.5z", fill: "#fff", stroke: "#333" }));
    } else { // freed: a dark cap where the memory went
      g.appendChild(svg("rect", { class: "mark end-freed", x: b - 2, y: y, width: 2, height: 13, fill: "#111" }));
    }
  }
  function drawLifetimes() {
    const box = document.getElementById("lifetimes-box");
    box.textContent = "";
    const ids = lifetimeRows(), rowH = 15, labelW = 190, w = Math.max(box.clientWidth, 400);
    const longest = longestLabel() * SLANT, right = Math.min(Math.max(18, longest + 8), 180);
    const top = Math.min(Math.round(longest) + 20, 160), h = top + ids.length * rowH + 40;
    const [d0, d1] = stepDomain(), x = v => labelW + (v - d0) / (d1 - d0) * (w - labelW - right);
    const root = svg("svg", { width: w, height: h, viewBox: "0 0 " + w + " " + h });
    const sel = state.selected >= 0 ? D.nodes[state.selected] : null;
    nodeTicks(root, x, top, top + ids.length * rowH, labelW, x(d1) + 1);
    ids.forEach((id, r) => {
      const i = byId.get(id), y = top + r * rowH + 2;
      const cls = sel ? (sel.unpacked_ids.includes(id) ? "hl-unpacked" : sel.produced_ids.includes(id) ? "hl-produced"
        : sel.freed_ids.includes(id) ? "hl-freed" : "dim") : "";
      const g = svg("g", { class: "row " + cls, "data-id": id });
      g.appendChild(svg("text", { x: 2, y: y + 10, fill: "#333" }, S.name[i].length > 28 ? S.name[i].slice(0, 27) + "\u2026" : S.name[i]));
      const end = S.f[i] === -1 ? lastStep + 1 : S.f[i] + 1;
      const a = Math.max(x(S.a[i]), labelW), b = Math.min(x(end), x(d1));
      if (b > labelW && a < x(d1)) {
        const bar = svg("rect", { class: "bar", x: a, y: y + 1, width: Math.max(b - a, 1.5), height: rowH - 4, fill: COLOR[S.role[i]] || "#999" });
        bar.appendChild(svg("title", {}, S.name[i] + " " + S.shape[i] + " " + bytes(S.bytes[i]) + " [" + S.role[i] + "]: step "
          + S.a[i] + (S.f[i] === -1 ? ", alive at the end" : ", freed at step " + S.f[i]) + (S.saved_by[i] ? "; saved by " + S.saved_by[i] : "")
          + (S.module && S.module[i] ? "; module " + S.module[i] : "") + (S.source && S.source[i] ? "; made at " + S.source[i] : "")));
        g.appendChild(bar);
        if (x(end) <= x(d1) + 0.5) endMark(g, i, b, y);   // not where the view cuts the bar
      }
      marks(g, S.saved[i], x, y, "saved", labelW, w);
      marks(g, S.unpacked[i], x, y, "unpacked", labelW, w);
      marks(g, S.released[i], x, y, "released", labelW, w);
      root.appendChild(g);
    });
    if (sel) root.appendChild(svg("line", { x1: x(sel.step + 0.5), x2: x(sel.step + 0.5), y1: top - 6, y2: top + ids.length * rowH, stroke: "#111", "stroke-dasharray": "3 3" }));
    stepAxis(root, x, d0, d1, top + ids.length * rowH + 4, labelW, x(d1) + 10);
    box.appendChild(root);
  }
  function marks(g, steps, x, y, kind, lo, hi) { // pixel offsets, so an unpack and a release in one step stay apart
    steps.forEach(s => {
      const cx = x(s + 0.5);
      if (cx < lo || cx > hi) return;
      if (kind === "saved") g.appendChild(svg("path", { class: "mark saved", d: "M" + (cx - 4) + " " + (y) + "h8l-4 6z", fill: "#222" }));
      if (kind === "unpacked") g.appendChild(svg("circle", { class: "mark unpacked", cx: cx - 4, cy: y + 6.5, r: 3, fill: "#fff", stroke: "#222" }));
      if (kind === "released") g.appendChild(svg("rect", { class: "mark released", x: cx + 2, y: y - 1, width: 2, height: 15, fill: "#222" }));
    });
  }
  function lifetimesNote() {
    const left = D.storages_total - D.lifetime_ids.length;
    document.getElementById("lifetimes-note").textContent = "One bar per storage, from the step that allocated it to the step that freed it, "
      + "in allocation order; ticks on top: backward nodes (hover a tick for its name). Marks: \u25bc saved, "
      + "\u25cb unpacked (used by backward), | slot released, \u258c freed (the bar ends there), \u25b6 still alive at the end. "
      + "Click a backward node (table below, or a tick on the chart) to outline what it unpacked (solid black), "
      + "produced (dashed) and freed (dotted)."
      + (left > 0 ? " Showing the " + D.lifetime_ids.length + " largest of " + D.storages_total.toLocaleString()
        + " storages; " + left.toLocaleString() + " left out (tensors.csv has them all)." : "");
  }

  // -- tables -------------------------------------------------------------------------------
  const NODE_COLS = [["step", "step", 1], ["name", "node"], ["unpacked", "unpacked (saved tensors used)"],
    ["unpacked_bytes", "bytes", 1], ["unpacked_made_by", "made by"], ["grads_in", "gradients in"],
    ["grads_out", "gradients out"], ["freed", "freed right after"], ["released", "slots released"],
    ["live", "live before \u2192 after", 1], ["peak_bytes", "peak inside", 1], ["module", "module"],
    ["source", "forward line"]];
  const BYTE_COLS = new Set(["unpacked_bytes", "live_before", "live_after", "peak_bytes"]);
  function cellText(key, v) {
    if (key === "live") return bytes(v[0]) + " \u2192 " + bytes(v[1]);
    if (BYTE_COLS.has(key)) return bytes(v);
    return typeof v === "string" ? v.split(";").join(", ") : String(v);
  }
  function nodesTable() {
    const t = document.getElementById("nodes-table"), head = el("tr");
    NODE_COLS.forEach(([, label, num]) => head.appendChild(el("th", num ? { class: "num" } : {}, label)));
    t.appendChild(el("thead")).appendChild(head);
    const body = t.appendChild(el("tbody"));
    D.nodes.forEach((n, k) => {
      const tr = el("tr", { "data-k": k, "data-step": n.step });
      NODE_COLS.forEach(([key, , num]) => {
        if (key === "module") { tr.appendChild(el("td")).appendChild(moduleLink(n.module)); return; }
        if (key === "source") { tr.appendChild(el("td")).appendChild(sourceText(n.source)); return; }
        tr.appendChild(el("td", num ? { class: "num" } : {}, cellText(key, key === "live" ? [n.live_before, n.live_after] : n[key])));
      });
      tr.addEventListener("click", () => selectNode(k === state.selected ? -1 : k));
      body.appendChild(tr);
    });
    const left = D.nodes_total - D.nodes.length;
    document.getElementById("nodes-note").textContent = "One row per backward node, in execution order. "
      + (left > 0 ? "Showing the " + D.nodes.length + " nodes with the highest peak of " + D.nodes_total.toLocaleString()
        + "; " + left.toLocaleString() + " left out (nodes.csv has them all)." : "");
  }
  function peakTable() {
    const P = D.at_peak, t = document.getElementById("peak-table"), head = el("tr");
    [["name"], ["role"], ["bytes", 1], ["shape"], ["why alive"], ["module"], ["source line"]].forEach(([l, num]) => head.appendChild(el("th", num ? { class: "num" } : {}, l)));
    t.appendChild(el("thead")).appendChild(head);
    const body = t.appendChild(el("tbody"));
    P.rows.forEach(r => {
      const tr = el("tr");
      tr.appendChild(el("td", {}, r.name));
      const role = el("td"), sw = el("span", { class: "swatch" }); sw.style.background = COLOR[r.role] || "#999";
      role.appendChild(sw); role.appendChild(document.createTextNode(r.role)); tr.appendChild(role);
      tr.appendChild(el("td", { class: "num" }, bytes(r.bytes)));
      tr.appendChild(el("td", {}, r.shape));
      tr.appendChild(withCode(el("td"), r.why));
      tr.appendChild(el("td")).appendChild(moduleLink(r.module));
      tr.appendChild(el("td")).appendChild(sourceText(r.source));
      body.appendChild(tr);
    });
    const left = P.total - P.rows.length;
    document.getElementById("peak-note").textContent = "Every storage live at the peak (" + bytes(D.peak.bytes) + ", step "
      + D.peak.step + ", " + D.peak.op + "): " + P.total.toLocaleString() + " storages, " + bytes(P.bytes) + ". "
      + (left > 0 ? "Showing the " + P.rows.length + " largest; " + left.toLocaleString() + " left out." : "");
  }

  // -- memory by module: a collapsible tree, and links to it from the tables ----------------
  const MODS = D.modules || [], modRows = new Map();
  function sourceText(src) { // "file:line" shown as "name.py:line", the full path on hover
    const el2 = el("span", { title: src || "" }, src ? src.split("/").pop() : "");
    return el2;
  }
  function moduleLink(path) { // the module's path; a click opens the tree at it
    if (!path) return el("span", { class: "note" }, "\u2014");
    if (!modRows.has(path)) return el("span", {}, path);
    const a = el("a", { class: "module-link", href: "#modules" }, path);
    a.addEventListener("click", e => { e.preventDefault(); showModule(path); });
    return a;
  }
  function showModule(path) {
    const d = modRows.get(path);
    if (!d) return;
    for (let p = d.parentElement; p; p = p.parentElement) if (p.tagName === "DETAILS") p.open = true;
    document.querySelectorAll("#module-tree summary.target").forEach(s => s.classList.remove("target"));
    const sum = d.querySelector("summary");
    sum.classList.add("target");
    sum.scrollIntoView({ block: "center" });
  }
  function moduleSummary(m, max) {
    const sum = el("summary", { title: m.module + " (" + m.type + "): activations " + stepWords() + " "
      + bytes(m.step_activation_bytes) + " own, " + bytes(m.step_activation_bytes_total) + " with children"
      + (D.training_step.calls > 1 ? " (summed over all " + D.training_step.calls + " steps: "
         + bytes(m.activation_bytes_total) + ", never held at once)" : "")
      + "; parameters " + bytes(m.parameter_bytes) + "; live at the peak " + bytes(m.peak_live_bytes_total)
      + "; ran " + m.calls + " time(s)" });
    const short = m.parent ? m.module.slice(m.parent.length + 1) : m.module;
    sum.appendChild(el("span", {}, short));
    sum.appendChild(el("span", { class: "type" }, m.type));
    const bar = el("div", { class: "mbar" });
    bar.style.width = (max ? 100 * m.step_activation_bytes_total / max : 0) + "%";
    sum.appendChild(el("span")).appendChild(bar);
    [m.step_activation_bytes_total, m.step_activation_bytes, m.parameter_bytes, m.peak_live_bytes_total]
      .forEach(v => sum.appendChild(el("span", { class: "num" }, bytes(v))));
    return sum;
  }
  function stepWords() {   // the one training step the tree speaks of: never a sum over several
    const t = D.training_step;
    return t.calls > 1 ? "in training step " + t.call + " of " + t.calls + " (the peak's)" : "in the training step";
  }
  function moduleTree() {
    if (!MODS.length) return;
    document.getElementById("modules").hidden = false;
    const box = document.getElementById("module-tree");
    const head = el("summary", { class: "head" });
    ["module", "type", "", "activations", "own activations", "own parameters", "at the peak"]
      .forEach((l, k) => head.appendChild(el("span", k > 2 ? { class: "num" } : {}, l)));
    box.appendChild(el("details", { open: "" })).appendChild(head);
    const max = Math.max(1, ...MODS.map(m => m.step_activation_bytes_total));
    const hasChild = new Set(MODS.map(m => m.parent));
    MODS.forEach(m => {
      const d = el("details", hasChild.has(m.module) ? {} : { class: "leaf" });
      if (m.depth < 2) d.open = true;
      d.appendChild(moduleSummary(m, max));
      (modRows.get(m.parent) || box).appendChild(d);
      modRows.set(m.module, d);
    });
    const left = D.modules_total - MODS.length;
    document.getElementById("modules-note").textContent = "One row per nn.Module, as named_modules() spells it under the "
      + "program's variable. Bar and first column: new bytes saved for backward (activations) " + stepWords()
      + " by ops that ran in the module and its children; then the module's own activations, its own parameters, and "
      + "what it and its children held at the peak (" + bytes(D.peak.bytes) + "). modules.csv has every column."
      + (left > 0 ? " Showing the " + MODS.length + " shallowest of " + D.modules_total.toLocaleString() + " modules." : "");
  }

  function selectNode(k) {
    state.selected = k;
    document.querySelectorAll("#nodes-table tbody tr").forEach(tr => tr.classList.toggle("selected", Number(tr.dataset.k) === k));
    redraw();
  }
  function redraw() { drawChart(); drawLifetimes(); }

  // -- the chain rule, node by node ----------------------------------------------------------
  function forwardValues() {
    const box = document.getElementById("forward-values");
    if (!D.forward.length) return;
    box.appendChild(el("h3", {}, "Forward pass: the values"));
    const t = el("table"), head = el("tr");
    ["tensor", "value", "made by", "saved for backward by"].forEach(h => head.appendChild(el("th", {}, h)));
    t.appendChild(el("thead")).appendChild(head);
    const body = t.appendChild(el("tbody"));
    D.forward.forEach(f => {
      const tr = el("tr", { "data-name": f.name });
      tr.appendChild(el("td")).appendChild(el("code", {}, f.name));
      tr.appendChild(el("td", { class: "num" }, f.value));
      tr.appendChild(el("td", {}, f.made));
      tr.appendChild(el("td", {}, f.saved_by ? f.saved_by.split(";").join(", ") : "\u2014"));
      body.appendChild(tr);
    });
    box.appendChild(t);
  }
  function gradientLines(box, g) {
    box.appendChild(el("div", { class: "formula" }, g.target + " = " + g.formula));
    g.steps.forEach(([text, value]) => box.appendChild(el("div", { class: "numbers" }, text + " = " + value)));
    if (!g.value) return;
    const line = el("div", { class: "numbers" }, g.target + " = " + g.numbers + " = " + g.value + "  ");
    if (g.match === true) line.appendChild(el("span", { class: "ok" }, "\u2713 torch computed " + g.torch));
    if (g.match === false) line.appendChild(el("span", { class: "bad" }, "\u2717 torch computed " + g.torch));
    box.appendChild(line);
  }
  function ruleCard(r) {
    const box = el("div", { class: "rule-node", "data-node": r.name });
    const h = el("h4", {}, r.name + " ");
    h.appendChild(el("span", { class: "step" }, "step " + r.step));
    box.appendChild(h);
    if (!r.on_file) {
      box.appendChild(el("div", { class: "none" }, "No rule on file for this node. " + (r.uses.length
        ? "It saved: " + r.uses.map(([f, n]) => n + " (" + f + ")").join(", ") + "." : "It saved nothing.")));
      return box;
    }
    const saved = r.uses.length
      ? "Saved for this step: " + r.uses.map(([f, n, use]) => n + " (" + f + (use ? ": " + use : "") + ")").join("; ")
      : (r.name.startsWith("AccumulateGrad") ? "Saves nothing: it stores the gradient that arrives as .grad."
        : "Saved nothing: this derivative needs no value from the forward pass.");
    box.appendChild(el("div", { class: "uses" }, saved));
    r.gradients.forEach(g => gradientLines(box, g));
    return box;
  }
  function derivationSection() {
    const with_values = D.rules.some(r => r.gradients.some(g => g.value));
    document.getElementById("derivation-note").textContent = "Backward runs the chain rule one node at a time, from the loss "
      + "back to the weights: each node multiplies the gradient arriving for its output by its local derivative. The "
      + "saved tensors are the forward values those derivatives need; a node whose derivative is a constant (a "
      + "subtraction: \u00b11) saves nothing. "
      + (with_values ? "Numbers: gradmem's arithmetic on the values recorded in this run, beside the gradient torch computed at that node."
        : "The tensors here are too large for their values to be recorded (at most 16 elements), so only the rules are shown.")
      + " Words and symbols: see the end of the page."
      + (D.nodes_total > D.rules.length ? " Showing the first " + D.rules.length + " of " + D.nodes_total.toLocaleString()
        + " nodes; nodes.csv has every rule (columns rule, rule_values, rule_check, saved_for)." : "");
    forwardValues();
    const box = document.getElementById("rules");
    D.rules.forEach(r => box.appendChild(ruleCard(r)));
  }

  moduleTree(); legend(); lifetimesNote(); nodesTable(); peakTable(); derivationSection(); redraw();
  window.gradmemReport = { data: D, state: state, selectNode: selectNode, showModule: showModule };
})();
