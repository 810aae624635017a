/* comparison.html: hand-written, no library. Two memory charts on one y axis, a chart of
   their difference, one cursor shared by all three, and the tables. Names go in as text. */
(function () {
  "use strict";
  const { bytes, el, upper, niceTicks, niceBytesTicks, PHASE_FILL } = gradmemCommon;
  const D = JSON.parse(document.getElementById("gradmem-data").textContent);
  const S = D.series, H = D.headline, LABELS = D.labels, ROLES = D.roles.map(r => r.role);
  const COLOR = {};
  D.roles.forEach(r => { COLOR[r.role] = r.color; });
  const N = S.x1.length ? S.x1[S.x1.length - 1] + 1 : 1;
  const PAD = { l: 70, r: 20, t: 26, b: 38 };
  const state = { cursor: null, tickLabels: {} };   // tickLabels[chart]: [{name, x, half}] drawn last
  const YMAX = Math.max(1, ...S.hi_a, ...S.hi_b) * 1.1;
  const DLO = Math.min(0, ...S.dlo), DHI = Math.max(0, ...S.dhi);
  const DSPAN = (DHI - DLO) || 1;
  const charts = { a: document.getElementById("chart-a"), b: document.getElementById("chart-b"), diff: document.getElementById("chart-diff") };

  function signed(n) { return n > 0 ? "+" + bytes(n) : n < 0 ? "\u2212" + bytes(-n) : "0 B"; }
  function layout(canvas, y0, y1) {
    const w = canvas.clientWidth, h = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0); ctx.clearRect(0, 0, w, h);
    return {
      ctx, w, h, canvas,
      x: v => PAD.l + v / N * (w - PAD.l - PAD.r),
      y: v => h - PAD.b - (v - y0) / (y1 - y0) * (h - PAD.t - PAD.b),
      inv: px => (px - PAD.l) / (w - PAD.l - PAD.r) * N,
    };
  }
  function bucketAt(row) { return S.x0.length ? upper(S.x0, row) : -1; }

  // -- drawing ------------------------------------------------------------------------------
  function drawPhases(L, side) {
    if (!S.rows) return;
    const ph = S.rows["phase_" + side];
    for (let i = 0; i < ph.length; i++) {
      if (!ph[i]) continue;
      L.ctx.fillStyle = PHASE_FILL[ph[i]] || PHASE_FILL.setup;
      L.ctx.fillRect(L.x(S.x0[i]), PAD.t, L.x(S.x1[i] + 1) - L.x(S.x0[i]), L.h - PAD.t - PAD.b);
    }
  }
  function phaseLabels(L, side) { // each run of one phase named at its top left, where it fits
    if (!S.rows) return;
    const ph = S.rows["phase_" + side];
    L.ctx.fillStyle = "#555"; L.ctx.font = "11px sans-serif"; L.ctx.textAlign = "left";
    let start = 0;
    for (let i = 1; i <= ph.length; i++) {
      if (i < ph.length && ph[i] === ph[start]) continue;
      const x0 = L.x(S.x0[start]), x1 = L.x(S.x1[i - 1] + 1);
      if (ph[start] && x1 - x0 > 60) L.ctx.fillText(ph[start], x0 + 4, PAD.t + 12);
      start = i;
    }
  }
  function nodeTicks(L, side) { // a tick above the plot at every row that ran a backward node
    if (!S.rows) return;
    const nodes = S.rows["node_" + side];
    L.ctx.strokeStyle = "rgba(120,60,0,0.55)"; L.ctx.lineWidth = 1;
    const ops = S.rows["op_" + side];
    L.ctx.fillStyle = "rgba(120,60,0,0.9)"; L.ctx.font = "10px sans-serif"; L.ctx.textAlign = "center";
    let lastEnd = PAD.l;
    const drawn = state.tickLabels[L.canvas.id] = [];
    for (let i = 0; i < nodes.length; i++) {
      if (!nodes[i]) continue;
      const x = L.x(S.x0[i] + 0.5);
      L.ctx.beginPath(); L.ctx.moveTo(x, PAD.t - 8); L.ctx.lineTo(x, PAD.t + 4); L.ctx.stroke();
      const name = String(ops[i] || ""), half = L.ctx.measureText(name).width / 2;   // named where it fits
      if (name && x - half > lastEnd + 6 && x + half < L.w - PAD.r) {
        L.ctx.fillText(name, x, PAD.t - 11);
        lastEnd = x + half;
        drawn.push({ name: name, x: x, half: half });
      }
    }
  }
  function drawStacks(L, side) {
    const by = S.by_role[side];
    for (let i = 0; i < S.x0.length; i++) {
      const x0 = L.x(S.x0[i]), w = Math.max(L.x(S.x1[i] + 1) - x0, 0.6);
      let base = 0;
      ROLES.forEach(r => {
        const v = by[r][i];
        if (!v) return;
        L.ctx.fillStyle = COLOR[r];
        L.ctx.fillRect(x0, L.y(base + v), w, L.y(base) - L.y(base + v));
        base += v;
      });
    }
    const hi = S["hi_" + side];
    L.ctx.beginPath(); L.ctx.strokeStyle = "#222"; L.ctx.lineWidth = 1.3;
    for (let i = 0; i < S.x0.length; i++) {
      const y = L.y(hi[i]);
      if (i === 0) L.ctx.moveTo(L.x(S.x0[i]), y); else L.ctx.lineTo(L.x(S.x0[i]), y);
      L.ctx.lineTo(L.x(S.x1[i] + 1), y);
    }
    L.ctx.stroke();
  }
  function drawPeak(L, side) {
    const row = H["peak_row_" + side], b = H["peak_" + side];
    if (row < 0) return;
    const x = L.x(row + 0.5), y = L.y(b);
    L.ctx.fillStyle = "#d62728"; L.ctx.beginPath(); L.ctx.arc(x, y, 4.5, 0, 2 * Math.PI); L.ctx.fill();
    L.ctx.font = "bold 11px sans-serif"; L.ctx.textAlign = x > L.w - 180 ? "right" : "left";
    L.ctx.fillText("peak " + bytes(b) + " (step " + H["peak_step_" + side] + ")", x + (L.ctx.textAlign === "right" ? -8 : 8), Math.max(y - 4, PAD.t + 10));
  }
  function drawAxes(L, ticks, fmt) {
    const ctx = L.ctx;
    ctx.strokeStyle = "#999"; ctx.lineWidth = 1; ctx.fillStyle = "#444"; ctx.font = "11px sans-serif";
    ctx.beginPath(); ctx.moveTo(PAD.l, PAD.t); ctx.lineTo(PAD.l, L.h - PAD.b); ctx.lineTo(L.w - PAD.r, L.h - PAD.b); ctx.stroke();
    ctx.textAlign = "right";
    ticks.forEach(v => {
      const y = L.y(v); if (y < PAD.t - 1 || y > L.h - PAD.b + 1) return;
      ctx.fillText(fmt(v), PAD.l - 5, y + 3);
      ctx.strokeStyle = "rgba(0,0,0,0.06)"; ctx.beginPath(); ctx.moveTo(PAD.l, y); ctx.lineTo(L.w - PAD.r, y); ctx.stroke();
    });
    ctx.textAlign = "center";
    const every = Math.max(1, Math.round(niceTicks(N, 8)[1] || N));
    for (let v = 0; v <= N; v += every) ctx.fillText(String(v), L.x(v), L.h - PAD.b + 13);
    ctx.fillText(H.same_steps ? "step" : "aligned row (steps matched by op)", (PAD.l + L.w - PAD.r) / 2, L.h - 6);
  }
  function drawCursor(L) {
    if (state.cursor === null) return;
    const i = bucketAt(state.cursor), x0 = L.x(S.x0[i]), x1 = L.x(S.x1[i] + 1);
    L.ctx.fillStyle = "rgba(31,79,209,0.12)"; L.ctx.fillRect(x0, PAD.t, Math.max(x1 - x0, 1), L.h - PAD.t - PAD.b);
    L.ctx.strokeStyle = "#1f4fd1"; L.ctx.lineWidth = 1.5;
    L.ctx.beginPath(); L.ctx.moveTo((x0 + x1) / 2, PAD.t); L.ctx.lineTo((x0 + x1) / 2, L.h - PAD.b); L.ctx.stroke();
  }
  function drawRun(side) {
    const L = layout(charts[side], 0, YMAX);
    drawPhases(L, side); drawStacks(L, side); phaseLabels(L, side); nodeTicks(L, side); drawPeak(L, side);
    drawAxes(L, niceBytesTicks(YMAX), bytes); drawCursor(L);
  }
  function diffTicks() {
    const step = niceBytesTicks(Math.max(DHI, -DLO))[1] || 1, out = [];
    for (let v = 0; v <= DHI; v += step) out.push(v);
    for (let v = -step; v >= DLO; v -= step) out.push(v);
    return out;
  }
  function drawDiff() {
    const L = layout(charts.diff, DLO - DSPAN * 0.08, DHI + DSPAN * 0.08), ctx = L.ctx;
    for (let i = 0; i < S.x0.length; i++) {
      const x0 = L.x(S.x0[i]), w = Math.max(L.x(S.x1[i] + 1) - x0, 0.6);
      if (S.dhi[i] > 0) { ctx.fillStyle = "#e15759"; ctx.fillRect(x0, L.y(S.dhi[i]), w, L.y(0) - L.y(S.dhi[i])); }
      if (S.dlo[i] < 0) { ctx.fillStyle = "#59a14f"; ctx.fillRect(x0, L.y(0), w, L.y(S.dlo[i]) - L.y(0)); }
    }
    ctx.strokeStyle = "#555"; ctx.beginPath(); ctx.moveTo(PAD.l, L.y(0)); ctx.lineTo(L.w - PAD.r, L.y(0)); ctx.stroke();
    phaseLabels(L, "b"); nodeTicks(L, "b");
    drawAxes(L, diffTicks(), signed); drawCursor(L);
  }
  function redraw() { drawRun("a"); drawRun("b"); drawDiff(); }

  // -- the shared cursor --------------------------------------------------------------------
  function describe(i, side) {
    const label = LABELS[side === "a" ? 0 : 1], by = S.by_role[side];
    const live = ROLES.reduce((s, r) => s + by[r][i], 0);
    let where = S.x0[i] === S.x1[i] ? "" : "rows " + S.x0[i] + "\u2013" + S.x1[i];
    if (S.rows) {
      const step = S.rows["step_" + side][i];
      where = step === null ? "no step here" : "step " + step + " " + S.rows["op_" + side][i] + " (" + S.rows["phase_" + side][i] + ")";
    }
    return label + ": " + where + ", " + bytes(live) + " live, " + bytes(S["hi_" + side][i]) + " highest";
  }
  function setCursor(row) {
    state.cursor = row === null ? null : Math.max(0, Math.min(N - 1, Math.floor(row)));
    const box = document.getElementById("readout");
    if (state.cursor !== null) {
      const i = bucketAt(state.cursor);
      box.textContent = describe(i, "a") + " \u00b7 " + describe(i, "b") + " \u00b7 difference " + signed(S.diff[i]);
    }
    redraw();
  }
  Object.values(charts).forEach(canvas => {
    canvas.addEventListener("mousemove", ev => {
      const b = canvas.getBoundingClientRect(), L = { w: canvas.clientWidth };
      const row = (ev.clientX - b.left - PAD.l) / (L.w - PAD.l - PAD.r) * N;
      if (row >= 0 && row < N) setCursor(row);
    });
  });
  window.addEventListener("resize", redraw);

  // -- legend and tables ----------------------------------------------------------------------
  function legend() {
    const box = document.getElementById("legend");
    D.roles.forEach(r => {
      const item = el("span", { title: r.meaning }), sw = el("span", { class: "swatch" });
      sw.style.background = r.color; item.appendChild(sw); item.appendChild(document.createTextNode(r.role)); box.appendChild(item);
    });
    const hi = el("span"); hi.appendChild(el("span", { class: "line-key" })); hi.appendChild(document.createTextNode("highest live bytes within a step"));
    box.appendChild(hi);
    document.getElementById("memory-note").textContent = "Live bytes after each step, stacked by role, both runs on the same y axis; "
      + "the third chart is " + LABELS[1] + " minus " + LABELS[0] + " (red: more in " + LABELS[1] + ", green: less). "
      + (H.same_steps ? "Both runs ran the same steps, so the x axis is the step."
        : "The runs' steps are aligned by op: " + H.unmatched_steps_a + " steps of " + LABELS[0] + " and " + H.unmatched_steps_b
          + " of " + LABELS[1] + " have no counterpart (that run's line stays flat there); the x axis counts aligned rows.")
      + (S.rows ? " A tick above a chart marks a step that ran a backward node, named where there is room; "
        + "hovering names every step." : "")
      + (S.bucket_rows > 1 ? " Drawn in buckets of " + S.bucket_rows + " rows." : "");
  }
  function table(id, cols, rows) {
    const t = document.getElementById(id), head = el("tr");
    if (!rows.length) { t.hidden = true; return; }
    cols.forEach(c => head.appendChild(el("th", c.num ? { class: "num" } : {}, c.label)));
    t.appendChild(el("thead")).appendChild(head);
    const body = t.appendChild(el("tbody"));
    rows.forEach(r => {
      const tr = el("tr");
      cols.forEach(c => {
        const v = c.get(r), cls = (c.num ? "num" : "") + (c.sign && v > 0 ? " plus" : c.sign && v < 0 ? " minus" : "");
        tr.appendChild(el("td", cls ? { class: cls.trim() } : {}, c.fmt ? c.fmt(v) : (v === null ? "" : String(v))));
      });
      body.appendChild(tr);
    });
  }
  const col = (label, key, fmt, num, sign) => ({ label, get: r => r[key], fmt, num, sign });
  const freed = r => r.free_step === null ? "alive at the end" : r.freed_after + " (step " + r.free_step + ")";
  function tables() {
    const [a, b] = LABELS;
    table("roles-table", [col("role", "role"), col("peak " + a, "peak_a", bytes, 1), col("peak " + b, "peak_b", bytes, 1),
      col("difference", "peak_diff", signed, 1, 1), col("end of backward " + a, "end_a", bytes, 1),
      col("end of backward " + b, "end_b", bytes, 1), col("difference", "end_diff", signed, 1, 1)], D.role_table);
    table("extra-table", [col("only in", "only_in"), col("name", "name"), col("role", "role"), col("bytes", "nbytes", bytes, 1),
      col("shape", "shape"), col("value", "value"), col("made by", "created_by"), col("allocated at step", "alloc_step", null, 1),
      { label: "freed", get: freed }, col("lives (steps)", "lifetime_steps", null, 1),
      col("outlives backward", "outlives_backward", v => v ? "yes" : "no")], D.extra);
    document.getElementById("extra-note").textContent = D.extra_total
      ? "Storages matched by name, op, shape and dtype in allocation order (docs/reports.md); these " + D.extra_total
        + " have no counterpart in the other run" + (D.extra_total > D.extra.length ? " (the first " + D.extra.length + " shown)." : ".")
      : "Every storage of each run has a counterpart in the other.";
    const when = s => r => r["free_step_" + s] === null ? "alive at the end" : r["freed_after_" + s] + " (step " + r["free_step_" + s] + ")";
    table("moved-table", [col("name", "name"), col("bytes", "nbytes", bytes, 1), col("role in " + a, "role_a"), col("role in " + b, "role_b"),
      col("allocated in " + a, "alloc_step_a", null, 1), col("allocated in " + b, "alloc_step_b", null, 1),
      { label: "freed in " + a, get: when("a") }, { label: "freed in " + b, get: when("b") }], D.moved);
    document.getElementById("moved-note").textContent = D.moved_total
      ? D.moved_total + " storages exist in both runs but were allocated, freed or classed differently." : "";
    if (!D.moved_total) { // no empty panel: say it where the storages are compared
      document.getElementById("moved").hidden = true;
      document.getElementById("extra-note").textContent += " Every storage both runs have lives the same steps in both.";
    }
    const stepOf = s => r => r["step_" + s] === null ? "" : r["step_" + s] + " " + r["op_" + s];
    table("steps-table", [{ label: "step in " + a, get: stepOf("a") }, { label: "step in " + b, get: stepOf("b") },
      col("live in " + a, "live_a", bytes, 1), col("live in " + b, "live_b", bytes, 1), col("difference", "diff", signed, 1, 1)], D.differ_most);
  }

  legend(); tables(); redraw();
  window.gradmemCompare = { data: D, state: state, setCursor: setCursor };
})();
