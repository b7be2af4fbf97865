// The jobs board: every job, live, in the order a person cares about: what runs, what waits
// (in queue order), then what ended, newest first.
"use strict";

(() => {
  const {el} = gand;
  const STATUSES = ["running", "cancelling", "recovering", "queued", "succeeded", "failed", "cancelled"];
  const ACTIVE = new Set(["running", "cancelling", "recovering"]);
  const tbody = document.querySelector("#jobs tbody");
  const statusSel = document.getElementById("filter-status");
  const variantSel = document.getElementById("filter-variant");
  const compareBtn = document.getElementById("compare");
  const selected = new Set();
  let rows = [];

  const params = new URLSearchParams(location.search);
  for (const s of STATUSES) statusSel.append(el("option", {value: s, text: s}));
  statusSel.value = params.get("status") || "";

  function order(a, b) {
    const rank = (r) => (ACTIVE.has(r.status) ? 0 : r.status === "queued" ? 1 : 2);
    if (rank(a) !== rank(b)) return rank(a) - rank(b);
    if (a.status === "queued" && b.status === "queued") {
      return a.queue.localeCompare(b.queue) || a.queue_position - b.queue_position;
    }
    return b.created_at.localeCompare(a.created_at);
  }

  function eta(r) {
    if (r.status === "queued") return `#${r.queue_position} in ${r.queue}`;
    if (r.status === "running") return gand.duration(r.eta_s);
    return "–";
  }

  function row(r) {
    const m = r.metrics || {};
    const box = el("input", {type: "checkbox", "aria-label": `select ${r.id}`,
                             checked: selected.has(r.id), onchange: (ev) => {
      if (ev.target.checked) selected.add(r.id); else selected.delete(r.id);
      updateCompare();
    }});
    return el("tr", {"data-job": r.id, "data-status": r.status},
      el("td", {}, box),
      el("td", {class: "job"}, el("a", {href: `/jobs/${r.id}`}, r.name || gand.shortId(r.id)),
         r.name ? el("span", {class: "muted id", text: gand.shortId(r.id)}) : null),
      el("td", {}, gand.badge(r.status)),
      el("td", {class: "progress-col"}, gand.progressBar(r.step, r.total_steps, r.status),
         el("span", {class: "steps", text: `${r.step}/${r.total_steps}`})),
      el("td", {class: "eta", text: eta(r)}),
      el("td", {class: "num ips", text: m.img_per_s === undefined ? "–" : gand.num(m.img_per_s, 3)}),
      el("td", {text: r.variant}),
      el("td", {class: "data", title: r.data.join(", "), text: r.data.map(shortData).join(", ")}),
      el("td", {text: r.loss}),
      el("td", {class: "num", text: gand.num(m.d_loss)}),
      el("td", {class: "num", text: gand.num(m.g_loss)}),
      el("td", {class: "worker", title: r.worker || "", text: r.worker || "–"}),
      el("td", {class: "age", title: r.created_at, text: gand.age(r.created_at)}));
  }

  // mnist:/long/path/to/mnist → mnist:…/mnist: the type and the folder's name say enough.
  function shortData(spec) {
    const m = spec.match(/^([a-z0-9_-]+):(.*\/)([^/]+)\/?$/i);
    return m ? `${m[1]}:…/${m[3]}` : spec;
  }

  function render() {
    const variants = [...new Set(rows.map((r) => r.variant))].sort();
    // Rebuilt only when the variants change, so an open dropdown is not closed under the user.
    if (variantSel.dataset.variants !== variants.join()) {
      const keep = variantSel.value || params.get("variant") || "";
      variantSel.replaceChildren(el("option", {value: "", text: "all"}),
        ...variants.map((v) => el("option", {value: v, text: v})));
      variantSel.value = variants.includes(keep) ? keep : "";
      variantSel.dataset.variants = variants.join();
    }
    const shown = rows.filter((r) => (!statusSel.value || r.status === statusSel.value)
                                  && (!variantSel.value || r.variant === variantSel.value))
                      .sort(order);
    tbody.replaceChildren(...shown.map(row));
    document.getElementById("empty").hidden = rows.length > 0;
    const running = rows.filter((r) => r.status === "running").length;
    const queued = rows.filter((r) => r.status === "queued").length;
    document.getElementById("counts").textContent =
      `${rows.length} jobs · ${running} running · ${queued} queued` +
      (shown.length !== rows.length ? ` · ${shown.length} shown` : "");
  }

  function updateCompare() {
    for (const id of [...selected]) if (!rows.some((r) => r.id === id)) selected.delete(id);
    compareBtn.disabled = selected.size < 2;
    compareBtn.textContent = selected.size ? `Compare selected (${selected.size})` : "Compare selected";
  }

  function filtersChanged() {
    const p = new URLSearchParams();
    if (statusSel.value) p.set("status", statusSel.value);
    if (variantSel.value) p.set("variant", variantSel.value);
    history.replaceState(null, "", "/" + (p.toString() ? "?" + p : ""));
    render();
  }

  statusSel.addEventListener("change", filtersChanged);
  variantSel.addEventListener("change", filtersChanged);
  compareBtn.addEventListener("click", () => {
    location.href = "/compare?ids=" + [...selected].join(",");
  });

  gand.stream({jobs: 1}, {
    jobs: (data) => { rows = data; render(); updateCompare(); },
  });
  setInterval(render, 10000);  // ages move on even when nothing else does
})();
