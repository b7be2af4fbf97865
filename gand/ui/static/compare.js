// Several jobs side by side: sample grids at one step (each job's nearest), curves overlaid on
// shared axes, and the configs with their differences highlighted.
"use strict";

(() => {
  const {el} = gand;
  const ids = JSON.parse(document.body.dataset.ids);
  const RATE = "img_per_s";
  let jobs = [];            // `gand show --json` of each job, in the order asked
  let config = [];          // [{key, values, differs}]
  let steps = [];           // every step any job drew a sample grid at
  let followLatest = true;
  const series = new Map(); // metric key → [Map(step → value) per job]
  const chartsByKey = new Map();
  const seen = new Map();   // job id → counts the page has loaded
  let reloading = null;

  const slider = document.getElementById("slider");
  const logBox = document.getElementById("log");
  const smoothInput = document.getElementById("smooth");
  const color = (i) => charts.PALETTE[i % charts.PALETTE.length];

  function chips() {
    document.getElementById("chips").replaceChildren(...jobs.map((j, i) =>
      el("a", {class: "chip", href: `/jobs/${j.id}`, style: `border-color:${color(i)}`},
        el("span", {class: "dot", style: `background:${color(i)}`}),
        `${gand.jobLabel(j)} · ${j.variant}/${j.loss} · `, gand.badge(j.status),
        ` ${j.step}/${j.total_steps}`)));
  }

  // --- samples at one step ----------------------------------------------------------------

  function showGrids() {
    const perJob = jobs.map((j) => gand.sampleSteps(j.artifacts));
    const before = steps[Number(slider.value)];
    steps = [...new Set(perJob.flat().map((a) => a.step))].sort((a, b) => a - b);
    slider.max = String(Math.max(0, steps.length - 1));
    slider.disabled = steps.length < 2;
    let i = steps.length - 1;
    if (!followLatest && before !== undefined) i = Math.max(0, steps.indexOf(before));
    slider.value = String(i);
    const grids = document.getElementById("grids");
    grids.replaceChildren(...jobs.map((j, k) => el("figure", {class: "grid-panel", "data-job": j.id},
      el("figcaption", {}, el("span", {class: "dot", style: `background:${color(k)}`}),
         el("a", {href: `/jobs/${j.id}`, text: gand.jobLabel(j)}),
         el("span", {class: "muted", text: ` ${j.variant} · ${j.loss}`})),
      el("img", {alt: "sample grid"}),
      el("div", {class: "grid-step"}))));
    pick(perJob);
  }

  function pick(perJob) {
    perJob = perJob || jobs.map((j) => gand.sampleSteps(j.artifacts));
    const step = steps[Number(slider.value)];
    document.getElementById("step").textContent = step === undefined ? "no sample grids yet"
      : `step ${step}  (${Number(slider.value) + 1} of ${steps.length})`;
    document.querySelectorAll(".grid-panel").forEach((fig, k) => {
      const a = step === undefined ? null : gand.nearest(perJob[k], step);
      const img = fig.querySelector("img");
      const label = fig.querySelector(".grid-step");
      if (!a) { img.hidden = true; label.textContent = "no sample grid yet"; return; }
      img.hidden = false;
      const src = `/api/artifacts/${a.id}`;
      if (img.getAttribute("src") !== src) img.setAttribute("src", src);
      img.dataset.step = String(a.step);
      img.alt = `${gand.jobLabel(jobs[k])} at step ${a.step}`;
      label.textContent = a.step === step ? `step ${a.step}` : `step ${a.step} (nearest to ${step})`;
      label.classList.toggle("approx", a.step !== step);
    });
  }

  slider.addEventListener("input", () => {
    followLatest = Number(slider.value) === steps.length - 1;
    pick();
  });
  gand.arrowKeys(slider);

  // --- curves -----------------------------------------------------------------------------

  function chartFor(key, kind) {
    if (!chartsByKey.has(key)) {
      const holder = el("div", {class: "compare-chart", "data-key": key});
      document.getElementById("charts").append(holder);
      chartsByKey.set(key, new charts.Chart(holder, {
        title: kind === "eval" ? `${key} (evaluation)` : key, height: kind === "eval" ? 200 : 240,
        names: jobs.map(gand.jobLabel), colors: jobs.map((_, i) => color(i)), sync: "cmp",
        points: kind === "eval", log: logBox.checked,
        smooth: kind === "eval" || key === RATE ? 0 : Number(smoothInput.value)}));
      chartsByKey.get(key).kind = kind;
      // Losses first, then D's accuracies, throughput, evaluations; each alphabetical.
      const order = (k) => [chartsByKey.get(k).kind === "eval" ? 3 : k === RATE ? 2
                            : /(^|_)acc$/.test(k) ? 1 : 0, k];
      const sorted = [...chartsByKey.keys()].sort((a, b) => {
        const [ra, ka] = order(a), [rb, kb] = order(b);
        return ra - rb || ka.localeCompare(kb);
      });
      for (const k of sorted) document.getElementById("charts").append(chartsByKey.get(k).container);
    }
    return chartsByKey.get(key);
  }

  function addMetrics(msg) {
    const k = jobs.findIndex((j) => j.id === msg.job_id);
    if (k < 0) return;
    if (msg.reset) for (const maps of series.values()) maps[k] = new Map();
    const touched = new Set();
    for (const r of msg.rows) {
      if (!series.has(r.key)) series.set(r.key, jobs.map(() => new Map()));
      series.get(r.key)[k].set(r.step, r.value);
      touched.add(r.key);
    }
    for (const key of (msg.reset ? series.keys() : touched)) {
      const chart = chartFor(key, "metric");
      chart.set(k, series.get(key)[k]);
    }
  }

  function showEvaluations() {
    const keys = new Set(jobs.flatMap((j) => j.evaluations.map((e) => e.key)));
    for (const key of keys) {
      const chart = chartFor(`${key}`, "eval");
      jobs.forEach((j, k) => chart.set(k, j.evaluations.filter((e) => e.key === key)
                                          .map((e) => [e.step, e.value])));
    }
  }

  logBox.addEventListener("change", () => {
    for (const c of chartsByKey.values()) c.setOption("log", logBox.checked);
  });
  smoothInput.addEventListener("input", () => {
    document.getElementById("smooth-value").textContent = Number(smoothInput.value).toFixed(2);
    for (const [key, c] of chartsByKey) {
      if (c.kind !== "eval" && key !== RATE) c.setOption("smooth", Number(smoothInput.value));
    }
  });

  // --- config -----------------------------------------------------------------------------

  function showConfig() {
    const table = document.getElementById("config-diff");
    const only = document.getElementById("only-diff").checked;
    table.querySelector("thead").replaceChildren(el("tr", {}, el("th", {text: "key"}),
      ...jobs.map((j, i) => el("th", {}, el("span", {class: "dot", style: `background:${color(i)}`}),
                                gand.jobLabel(j)))));
    const rows = config.filter((r) => r.differs || !only);
    table.querySelector("tbody").replaceChildren(...rows.map((r) => el("tr",
      {class: r.differs ? "differs" : "", "data-key": r.key},
      el("td", {class: "key", text: r.key}),
      ...r.values.map((v) => el("td", {text: v === undefined ? "–" : JSON.stringify(v)})))));
    if (!rows.length) {
      table.querySelector("tbody").append(el("tr", {}, el("td", {colspan: jobs.length + 1,
        class: "muted", text: "the configs are the same"})));
    }
  }
  document.getElementById("only-diff").addEventListener("change", showConfig);

  // --- loading and live updates -----------------------------------------------------------

  async function reload() {
    const data = await gand.api(`/api/compare?ids=${encodeURIComponent(ids.join(","))}`);
    jobs = data.jobs;
    config = data.config;
    for (const j of jobs) {
      seen.set(j.id, {artifacts: j.artifacts.length, evaluations: j.evaluations.length,
                      status: j.status, step: j.step});
    }
    chips();
    showGrids();
    showEvaluations();
    showConfig();
  }

  function reloadSoon() {
    if (reloading) { reloading.again = true; return; }
    reloading = {again: false};
    reload().catch((e) => gand.notice(`could not load: ${e.message}`)).finally(() => {
      const again = reloading.again;
      reloading = null;
      if (again) reloadSoon();
    });
  }

  function onJob(state) {
    const s = seen.get(state.id);
    if (!s) return;
    if (s.artifacts !== state.counts.artifacts || s.evaluations !== state.counts.evaluations
        || s.status !== state.status) {
      reloadSoon();
    } else if (s.step !== state.step) {
      s.step = state.step;
      const j = jobs.find((x) => x.id === state.id);
      j.step = state.step;
      chips();
    }
  }

  reload().then(() => {
    gand.stream({ids: ids.join(","), points: 2000}, {
      job: onJob, metrics: addMetrics,
      gone: (m) => gand.notice(`job ${m.job_id} was deleted`),
    });
  }).catch((e) => gand.notice(`could not load: ${e.message}`));
})();
