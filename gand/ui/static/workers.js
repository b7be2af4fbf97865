// The fleet: every worker by host, what it runs, and the ones that stopped renewing a lease.
"use strict";

(() => {
  const {el} = gand;
  let workers = null;
  let jobs = new Map();

  function host(name) {
    const at = name.lastIndexOf("@");
    return at >= 0 ? name.slice(at + 1) : name;
  }

  function render() {
    if (workers === null) return;
    const problem = document.getElementById("problem");
    if (!Array.isArray(workers)) {  // the broker could not be asked
      problem.hidden = false;
      problem.textContent = workers.error;
      return;
    }
    problem.hidden = true;
    const sorted = workers.slice().sort((a, b) => host(a.worker).localeCompare(host(b.worker))
                                                 || a.worker.localeCompare(b.worker));
    document.querySelector("#workers tbody").replaceChildren(...sorted.map((w) => {
      const j = w.job ? jobs.get(w.job) : null;
      const lease = w.lease_expires_at ? (Date.parse(w.lease_expires_at) - Date.now()) / 1000 : null;
      return el("tr", {class: w.state, "data-worker": w.worker},
        el("td", {text: host(w.worker)}),
        el("td", {class: "worker", text: w.worker}),
        el("td", {}, el("span", {class: `badge ${w.state}`, text: w.state})),
        el("td", {text: j ? j.config.device : "–"}),
        el("td", {}, w.job ? el("a", {href: `/jobs/${w.job}`, text: j ? gand.jobLabel(j) : gand.shortId(w.job)}) : "–"),
        el("td", {class: "progress-cell"}, j ? gand.progressBar(j.step, j.total_steps, j.status) : "",
           j ? el("span", {class: "steps", text: `${j.step}/${j.total_steps}`}) : ""),
        el("td", {text: lease === null ? "–" : lease >= 0 ? `${Math.round(lease)}s left`
                                                         : `expired ${gand.duration(-lease)} ago`}));
    }));
    const hosts = new Set(workers.map((w) => host(w.worker)));
    const count = (s) => workers.filter((w) => w.state === s).length;
    document.getElementById("summary").textContent =
      `${hosts.size} hosts · ${workers.length} workers · ${count("busy")} busy · ${count("idle")} idle · ${count("lost")} lost`;
    document.getElementById("empty").hidden = workers.length > 0;
  }

  gand.stream({workers: 1, jobs: 1}, {
    workers: (data) => { workers = data; render(); },
    jobs: (data) => { jobs = new Map(data.map((j) => [j.id, j])); render(); },
  });
})();
