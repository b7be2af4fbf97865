// What every page shares: the JSON API, the one live stream, the action token, formatting.
"use strict";

const gand = (() => {
  const body = document.body;
  const readOnly = body.dataset.readOnly === "1";
  const TOKEN_KEY = "gand-ui-token";

  // A token given once as ?token=… is kept in this browser and taken out of the address bar,
  // so it does not linger in history or get pasted along with a link.
  (function keepTokenFromUrl() {
    const url = new URL(location.href);
    const t = url.searchParams.get("token");
    if (t) {
      localStorage.setItem(TOKEN_KEY, t);
      url.searchParams.delete("token");
      history.replaceState(null, "", url.pathname + (url.search || "") + url.hash);
    }
  })();

  function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  async function api(path, options = {}) {
    const res = await fetch(path, options);
    let data = null;
    try { data = await res.json(); } catch (e) { /* not JSON: say the status below */ }
    if (!res.ok) {
      const err = new Error((data && data.error) || `${res.status} ${res.statusText}`);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  // An action (cancel, resume) with the token; a refusal asks for the token and says why.
  async function act(path, payload) {
    const headers = {"Content-Type": "application/json"};
    if (token()) headers["Authorization"] = "Bearer " + token();
    try {
      return await api(path, {method: "POST", headers, body: JSON.stringify(payload || {})});
    } catch (e) {
      if (e.status === 403 && !readOnly) showTokenForm();
      throw e;
    }
  }

  function showTokenForm() {
    const box = document.getElementById("access");
    if (box.querySelector("form")) { box.querySelector("input").focus(); return; }
    const input = el("input", {type: "password", placeholder: "token from `gand ui`",
                               "aria-label": "action token", id: "token-input"});
    const form = el("form", {class: "token-form", onsubmit: (ev) => {
      ev.preventDefault();
      localStorage.setItem(TOKEN_KEY, input.value.trim());
      renderAccess();
    }}, input, el("button", {type: "submit", text: "Use token"}));
    box.replaceChildren(form);
    input.focus();
  }

  function renderAccess() {
    const box = document.getElementById("access");
    if (readOnly) { box.replaceChildren(el("span", {class: "pill", text: "read-only"})); return; }
    if (token()) {
      box.replaceChildren(el("span", {class: "pill ok", text: "token set"}),
        el("button", {class: "link", text: "forget", onclick: () => {
          localStorage.removeItem(TOKEN_KEY); renderAccess(); }}));
    } else {
      box.replaceChildren(el("button", {class: "link", text: "enter token",
                                        onclick: showTokenForm}));
    }
  }

  // The page's one EventSource; `handlers` maps event names to functions of the parsed data.
  function stream(params, handlers) {
    const live = document.getElementById("live");
    const es = new EventSource("/api/events?" + new URLSearchParams(params));
    es.onopen = () => { live.textContent = "live"; live.className = "live on"; };
    es.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => fn(JSON.parse(ev.data)));
    }
    return es;
  }

  function notice(message) {
    const box = document.getElementById("notice");
    box.textContent = message;
    box.hidden = !message;
  }

  function duration(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    s = Math.round(s);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
    const h = Math.floor(s / 3600);
    if (h < 48) return `${h}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
    return `${Math.floor(h / 24)}d ${h % 24}h`;
  }

  function age(iso) {
    return iso ? duration((Date.now() - Date.parse(iso)) / 1000) : "–";
  }

  function num(v, digits = 4) {
    if (v === null || v === undefined) return "–";
    if (!isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return Number(v.toPrecision(digits)).toString();
  }

  function bytes(n) {
    if (n < 1024) return `${n} B`;
    const units = ["KiB", "MiB", "GiB"];
    let i = -1;
    do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
    return `${n.toFixed(1)} ${units[i]}`;
  }

  function badge(status) {
    return el("span", {class: `badge ${status}`, text: status});
  }

  function progressBar(step, total, status) {
    const pct = total ? Math.min(100, 100 * step / total) : 0;
    return el("div", {class: `bar ${status}`, title: `${step}/${total}`},
      el("div", {style: `width:${pct.toFixed(1)}%`}));
  }

  function shortId(id) { return id.slice(0, 12); }

  function jobLabel(job) { return job.name ? `${job.name} (${shortId(job.id)})` : shortId(job.id); }

  // The sample grid of each step (the latest drawing of a step, should a resume redraw it).
  function sampleSteps(artifacts) {
    const byStep = new Map();
    for (const a of artifacts) {
      if (a.kind !== "samples" || a.step === null) continue;
      const seen = byStep.get(a.step);
      if (!seen || a.id > seen.id) byStep.set(a.step, a);
    }
    return [...byStep.keys()].sort((a, b) => a - b).map((s) => byStep.get(s));
  }

  // The sample of `samples` (sorted by step) nearest to `step`; the earlier one on a tie.
  function nearest(samples, step) {
    let best = null;
    for (const a of samples) {
      if (best === null || Math.abs(a.step - step) < Math.abs(best.step - step)) best = a;
    }
    return best;
  }

  // Left/right arrows move a range input, unless the user is typing somewhere.
  function arrowKeys(slider) {
    document.addEventListener("keydown", (ev) => {
      const t = ev.target;
      if (t instanceof HTMLInputElement && t !== slider && t.type !== "checkbox") return;
      if (t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) return;
      if (ev.key !== "ArrowLeft" && ev.key !== "ArrowRight") return;
      if (t === slider) return;  // the browser already moves a focused slider
      const v = Number(slider.value) + (ev.key === "ArrowRight" ? 1 : -1);
      if (v < Number(slider.min) || v > Number(slider.max)) return;
      ev.preventDefault();
      slider.value = String(v);
      slider.dispatchEvent(new Event("input"));
    });
  }

  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === body.dataset.page) a.classList.add("here");
  }
  renderAccess();

  return {readOnly, token, el, api, act, stream, notice, duration, age, num, bytes, badge,
          progressBar, shortId, jobLabel, sampleSteps, nearest, arrowKeys};
})();
