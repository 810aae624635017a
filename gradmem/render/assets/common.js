/* Shared by report.html and comparison.html: formatting, DOM building (names always go in
   as text, never as markup), search and axis ticks. Hand-written, no library. */
const gradmemCommon = (function () {
  "use strict";
  const PHASE_FILL = /*gradmem:phase-colors*/{};   // filled from gradmem/roles.py PHASE_COLORS
  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    n = Number(n);
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? Math.round(n) + " B" : n.toFixed(1) + " " + units[i];
  }
  function withCode(parent, text) { // `name` shown as code; every piece goes in as text
    String(text).split("`").forEach((part, k) => {
      if (part) parent.appendChild(k % 2 ? el("code", {}, part) : document.createTextNode(part));
    });
    return parent;
  }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function upper(arr, x) { // index of the last element <= x
    let lo = 0, hi = arr.length - 1, ans = 0;
    while (lo <= hi) { const mid = (lo + hi) >> 1; if (arr[mid] <= x) { ans = mid; lo = mid + 1; } else hi = mid - 1; }
    return ans;
  }
  function niceTicks(max, n) {
    const raw = max / n, mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
    const step = [1, 2, 5, 10].map(m => m * mag).find(s => raw <= s) || mag * 10;
    const out = [];
    for (let v = 0; v <= max; v += step) out.push(v);
    return out;
  }
  function niceBytesTicks(max) {
    const k = max >= 1024 ** 3 ? 1024 ** 3 : max >= 1024 ** 2 ? 1024 ** 2 : max >= 1024 ? 1024 : 1;
    return niceTicks(max / k, 4).map(v => v * k);
  }
  return { bytes, withCode, el, svg, upper, niceTicks, niceBytesTicks, PHASE_FILL };
})();
