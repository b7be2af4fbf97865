// The fleet from the worker registry: every worker by host, its GPU, what it runs, lost ones.
"use strict";

(() => {
  const {el} = gand;
  let workers = null;
  let jobs = new Map();

  const host = (w) => w.host;
  const gpuLabel = (w) => w.gpus.length
    ? w.gpus.map((g) => `${g.index}: ${g.name} (${Math.round(g.memory_mb * g.share / 1024)} GB)`).join(", ")
    : "CPU";

  function render() {
    if (workers === null) return;
    const problem = document.getElementById("problem");
    if (!Array.isArray(workers)) {  // the database could not be asked
      problem.hidden = false;
      problem.textContent = workers.error;
      return;
    }
    problem.hidden = true;
    const sorted = workers.slice().sort((a, b) => host(a).localeCompare(host(b))
                                                 || a.worker.localeCompare(b.worker));
    document.querySelector("#workers tbody").replaceChildren(...sorted.map((w) => {
      const j = w.job ? jobs.get(w.job) : null;
      const seen = (Date.now() - Date.parse(w.last_seen)) / 1000;
      return el("tr", {class: w.state, "data-worker": w.worker},
        el("td", {text: host(w)}),
        el("td", {class: "worker", text: w.worker}),
        el("td", {}, el("span", {class: `badge ${w.state}`, text: w.state})),
        el("td", {text: gpuLabel(w)}),
        el("td", {}, w.job ? el("a", {href: `/jobs/${w.job}`, text: j ? gand.jobLabel(j) : gand.shortId(w.job)}) : "–"),
        el("td", {class: "progress-cell"}, j ? gand.progressBar(j.step, j.total_steps, j.status) : "",
           j ? el("span", {class: "steps", text: `${j.step}/${j.total_steps}`}) : ""),
        el("td", {text: `${gand.duration(Math.max(0, seen))} ago`}));
    }));
    const hosts = new Set(workers.map(host));
    const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
    const count = (s) => workers.filter((w) => w.state === s).length;
    document.getElementById("summary").textContent =
      `${plural(hosts.size, "host")} · ${plural(workers.length, "worker")} · ${count("busy")} busy · ${count("idle")} idle · ${count("lost")} lost`;
    document.getElementById("empty").hidden = workers.length > 0;
  }

  gand.stream({workers: 1, jobs: 1}, {
    workers: (data) => { workers = data; render(); },
    jobs: (data) => { jobs = new Map(data.map((j) => [j.id, j])); render(); },
  });
})();
