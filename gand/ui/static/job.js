// One job: progress, sample grids on a step slider, loss and evaluation curves, checkpoints,
// events and config, all kept live by the page's one stream.
"use strict";

(() => {
  const {el} = gand;
  const jobId = document.body.dataset.job;
  const RATE = "img_per_s";
  // What a job records about its machinery (checkpoint pauses, peak memory): not losses, and
  // hundreds of ms or MB would flatten the loss chart; the header shows the memory peaks.
  const SYSTEM = new Set([RATE, "ckpt_pause_ms", "ckpt_write_ms", "samples_pause_ms",
                          "samples_write_ms", "peak_rss_mb", "peak_gpu_mb"]);
  const CANCELLABLE = new Set(["queued", "running"]);
  const RESUMABLE = new Set(["succeeded", "failed", "cancelled"]);

  let detail = null;        // `gand show --json` of the job
  let latest = null;        // the stream's last progress frame (it alone has the ETA)
  let samples = [];         // one sample artifact per step, by step
  let followLatest = true;  // the slider stays on the newest grid until the user moves it
  let reloading = null;
  const series = new Map(); // metric key → Map(step → value)
  let lossChart = null, accChart = null, rateChart = null;
  const evalCharts = new Map();

  const slider = document.getElementById("slider");
  const img = document.getElementById("sample");
  const logBox = document.getElementById("log");
  const smoothInput = document.getElementById("smooth");

  // --- header and actions ----------------------------------------------------------------

  function header(state) {
    const status = state.status;
    const badge = document.getElementById("status");
    badge.className = `badge ${status}`;
    badge.textContent = status;
    const pct = state.total_steps ? Math.min(100, 100 * state.step / state.total_steps) : 0;
    const fill = document.getElementById("bar-fill");
    fill.style.width = `${pct.toFixed(1)}%`;
    fill.parentElement.className = `bar big ${status}`;
    const m = state.metrics || {};
    const parts = [`step ${state.step}/${state.total_steps}`];
    if (status === "running") parts.push(`ETA ${gand.duration(state.eta_s)}`);
    if (m[RATE] !== undefined) parts.push(`${gand.num(m[RATE], 3)} img/s`);
    if (m.peak_rss_mb !== undefined) parts.push(`peak RAM ${Math.round(m.peak_rss_mb)} MB`);
    if (m.peak_gpu_mb !== undefined) parts.push(`peak GPU ${Math.round(m.peak_gpu_mb)} MB`);
    for (const k of ["d_loss", "g_loss"]) if (m[k] !== undefined) parts.push(`${k} ${gand.num(m[k])}`);
    document.getElementById("stepinfo").textContent = parts.join(" · ");
    document.getElementById("cancel").disabled = gand.readOnly || !CANCELLABLE.has(status);
    document.getElementById("resume").disabled = gand.readOnly || !RESUMABLE.has(status);
    const error = document.getElementById("error");
    error.hidden = !state.error;
    error.textContent = state.error ? `error: ${state.error}` : "";
  }

  function describe(d) {
    document.getElementById("title").textContent = d.name || d.id;
    document.title = `${d.name || gand.shortId(d.id)} · gand`;
    // What the worker's device made of the fast-path options (`gand show`'s "ran as").
    const rt = d.config.runtime;
    const ran = rt ? `ran as ${[rt.device, rt.precision, rt.channels_last && "channels_last",
                                rt.compile && "compile", rt.cuda_graph && "cuda graph"]
                      .filter(Boolean).join(" ")}` : null;
    const bits = [d.name ? d.id : null, `${d.variant} · ${d.loss}`, d.data.join(", "),
                  `seed ${d.config.seed}`, `batch ${d.config.options.batch_size}`,
                  d.worker ? `on ${d.worker}` : null, ran, `queue ${d.queue}`];
    document.getElementById("subtitle").textContent = bits.filter(Boolean).join("  ·  ");
    const steps = document.getElementById("resume-steps");
    if (!steps.value || Number(steps.value) <= d.total_steps) steps.placeholder = String(d.total_steps);
  }

  async function action(kind) {
    const box = document.getElementById("action-result");
    const body = {};
    const steps = document.getElementById("resume-steps").value;
    if (kind === "resume" && steps) body.steps = Number(steps);
    try {
      const r = await gand.act(`/api/jobs/${jobId}/${kind}`, body);
      box.className = "action-result ok";
      box.textContent = kind === "cancel" ? `cancel: the job is ${r.status}`
        : `resumed: queued, continues from step ${r.from_step} to ${r.total_steps}`;
    } catch (e) {
      box.className = "action-result refused";
      box.textContent = `${kind} refused: ${e.message}`;
    }
    box.hidden = false;
  }
  document.getElementById("cancel").addEventListener("click", () => action("cancel"));
  document.getElementById("resume").addEventListener("click", () => action("resume"));
  if (gand.readOnly) {
    for (const b of document.querySelectorAll(".actions button")) b.title = "read-only dashboard";
  }

  // --- samples ----------------------------------------------------------------------------

  function showSamples() {
    const before = samples[Number(slider.value)];
    samples = gand.sampleSteps(detail.artifacts);
    document.getElementById("no-samples").hidden = samples.length > 0;
    img.hidden = samples.length === 0;
    slider.disabled = samples.length < 2;
    slider.max = String(Math.max(0, samples.length - 1));
    let i = samples.length - 1;
    if (!followLatest && before) i = Math.max(0, samples.findIndex((a) => a.step === before.step));
    slider.value = String(i);
    pickSample();
  }

  function pickSample() {
    const a = samples[Number(slider.value)];
    if (!a) { document.getElementById("sample-step").textContent = ""; return; }
    const src = `/api/artifacts/${a.id}`;
    if (img.getAttribute("src") !== src) img.setAttribute("src", src);
    img.dataset.step = String(a.step);
    img.alt = `sample grid at step ${a.step}`;
    document.getElementById("sample-step").textContent =
      `step ${a.step}  (${Number(slider.value) + 1} of ${samples.length})`;
  }

  slider.addEventListener("input", () => {
    followLatest = Number(slider.value) === samples.length - 1;
    pickSample();
  });
  gand.arrowKeys(slider);

  // --- curves -----------------------------------------------------------------------------

  // D's accuracies live in [0, 1] and would flatten the losses: they get a chart of their own.
  const isAccuracy = (k) => /(^|_)acc$/.test(k);
  const lossKeys = () => [...series.keys()].filter((k) => !SYSTEM.has(k) && !isAccuracy(k)).sort();
  const accKeys = () => [...series.keys()].filter(isAccuracy).sort();

  function chartOf(chart, holderId, keys, opts) {
    if (!keys.length) return chart;
    if (!chart || chart.opts.names.join() !== keys.join()) {
      if (chart) chart.destroy();
      document.getElementById(holderId).replaceChildren();
      chart = new charts.Chart(document.getElementById(holderId), {
        names: keys, log: logBox.checked, smooth: Number(smoothInput.value), sync: "job", ...opts});
    }
    keys.forEach((k, i) => chart.set(i, series.get(k)));
    return chart;
  }

  function drawCurves() {
    lossChart = chartOf(lossChart, "loss-chart", lossKeys(), {title: "losses", height: 300});
    accChart = chartOf(accChart, "acc-chart", accKeys(),
                       {title: "discriminator accuracy", height: 160, log: false});
    if (series.has(RATE)) {
      if (!rateChart) {
        rateChart = new charts.Chart(document.getElementById("rate-chart"), {
          title: "throughput", names: ["img/s"], height: 140, colors: ["#64748b"], sync: "job"});
      }
      rateChart.set(0, series.get(RATE));
    }
  }

  function addMetrics(msg) {
    if (msg.reset) series.clear();
    for (const r of msg.rows) {
      if (!series.has(r.key)) series.set(r.key, new Map());
      series.get(r.key).set(r.step, r.value);
    }
    drawCurves();
  }

  logBox.addEventListener("change", () => {
    if (lossChart) lossChart.setOption("log", logBox.checked);
    for (const c of evalCharts.values()) c.setOption("log", logBox.checked);
  });
  smoothInput.addEventListener("input", () => {
    document.getElementById("smooth-value").textContent = Number(smoothInput.value).toFixed(2);
    for (const c of [lossChart, accChart]) if (c) c.setOption("smooth", Number(smoothInput.value));
  });

  // --- evaluations, checkpoints, events, config -------------------------------------------

  function bestCheckpoint(d) {
    const best = d.checkpoints.filter((c) => c.is_best);
    return best.length ? best[best.length - 1] : null;
  }

  function showEvaluations(d) {
    const byKey = new Map();
    for (const e of d.evaluations) {
      if (!byKey.has(e.key)) byKey.set(e.key, {metric: e.metric, points: new Map(), protocol: e});
      byKey.get(e.key).points.set(e.step, e.value);
    }
    document.getElementById("no-evals").hidden = byKey.size > 0;
    const best = bestCheckpoint(d);
    const by = d.config.eval && d.config.eval.best_by;
    const bestValue = best && by && byKey.has(by.key) ? byKey.get(by.key).points.get(best.step) : undefined;
    document.getElementById("best").textContent = best
      ? `best checkpoint: step ${best.step}` + (by ? ` by ${by.key} (${by.direction} is better)` : "")
        + (bestValue !== undefined ? ` = ${gand.num(bestValue)}` : "")
      : "";
    const box = document.getElementById("eval-charts");
    for (const [key, chart] of evalCharts) {
      if (!byKey.has(key)) { chart.destroy(); evalCharts.delete(key); }
    }
    // The value that picks the best checkpoint first, then the rest by name.
    const rank = (k) => [k === (by && by.key) ? 0 : 1, k];
    const keys = [...byKey.keys()].sort((a, b) => rank(a)[0] - rank(b)[0] || a.localeCompare(b));
    for (const key of keys) {
      const info = byKey.get(key);
      if (!evalCharts.has(key)) {
        const holder = el("div", {class: "eval-chart", "data-key": key});
        box.append(holder);
        const p = info.protocol;
        const title = `${key}` + (p.extractor ? ` · ${p.extractor}` : "") +
          (p.num_samples ? ` · n=${p.num_samples}` : "");
        evalCharts.set(key, new charts.Chart(holder, {
          title, names: [key], height: 180, points: true, log: logBox.checked, sync: "job",
          colors: [key === (by && by.key) ? "#b45309" : "#0f766e"]}));
      }
      const chart = evalCharts.get(key);
      const label = key === (by && by.key) ? `best ${gand.num(bestValue)}` : "best";
      chart.opts.mark = best ? {step: best.step, label} : null;
      chart.set(0, info.points);
    }
    for (const key of keys) box.append(evalCharts.get(key).container);
  }

  function showCheckpoints(d) {
    const tbody = document.querySelector("#checkpoints tbody");
    tbody.replaceChildren(...d.checkpoints.slice().reverse().map((c) => el("tr",
      {class: c.is_best ? "best" : ""},
      el("td", {class: "num", text: c.step}),
      el("td", {class: "num", text: gand.bytes(c.bytes)}),
      el("td", {text: new Date(c.time).toLocaleString()}),
      el("td", {}, c.is_best ? el("span", {class: "star", text: "★ best"}) : ""))));
    if (!d.checkpoints.length) tbody.append(el("tr", {}, el("td", {colspan: 4, class: "muted", text: "none yet"})));
  }

  function showEvents(d) {
    document.getElementById("events").replaceChildren(...d.events.slice().reverse().map((e) =>
      el("li", {class: e.from_status === e.to_status ? "note" : ""},
        el("time", {datetime: e.time, text: new Date(e.time).toLocaleString()}),
        e.from_status === e.to_status ? el("span", {class: "muted", text: "note"})
          : el("span", {}, e.from_status ? gand.badge(e.from_status) : "submitted", " → ",
               gand.badge(e.to_status)),
        e.worker ? el("span", {class: "muted", text: e.worker}) : null,
        el("span", {class: "reason", text: e.reason || ""}))));
  }

  async function reload() {
    detail = await gand.api(`/api/jobs/${jobId}`);
    describe(detail);
    header(latest && latest.status === detail.status ? latest : detail);
    showSamples();
    showEvaluations(detail);
    showCheckpoints(detail);
    showEvents(detail);
    document.getElementById("config").textContent = JSON.stringify(detail.config, null, 2);
  }

  // Re-read the whole job when the stream says something besides metrics changed; at most one
  // read at a time, and one more if more changed meanwhile.
  function reloadSoon() {
    if (reloading) { reloading.again = true; return; }
    reloading = {again: false};
    reload().catch((e) => gand.notice(`could not load the job: ${e.message}`)).finally(() => {
      const again = reloading.again;
      reloading = null;
      if (again) reloadSoon();
    });
  }

  function changed(state) {
    if (!detail) return true;
    const c = state.counts;
    return c.artifacts !== detail.artifacts.length || c.checkpoints !== detail.checkpoints.length
        || c.evaluations !== detail.evaluations.length || c.events !== detail.events.length
        || state.status !== detail.status;
  }

  reload().then(() => {
    gand.stream({ids: jobId, points: 3000}, {
      job: (state) => { latest = state; header(state); if (changed(state)) reloadSoon(); },
      metrics: addMetrics,
      gone: () => gand.notice("this job was deleted"),
    });
  }).catch((e) => gand.notice(`could not load the job: ${e.message}`));
})();
