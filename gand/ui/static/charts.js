// Line charts on uPlot: series keyed by step, smoothing, log scale and a marked step.
"use strict";

const charts = (() => {
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
                   "#be185d", "#4d7c0f", "#7c3aed", "#b45309"];

  // TensorBoard's smoothing: an exponential moving average, debiased at the start so the
  // first points are not pulled toward zero. Gaps (null) stay gaps.
  function smooth(values, weight) {
    if (!weight) return values;
    let last = 0, n = 0;
    return values.map((v) => {
      if (v === null || v === undefined || !isFinite(v)) return v;
      last = last * weight + (1 - weight) * v;
      n += 1;
      return last / (1 - Math.pow(weight, n));
    });
  }

  // Several series (each a Map step → value) on one x axis: uPlot's aligned arrays.
  function align(seriesMaps) {
    const steps = new Set();
    for (const m of seriesMaps) for (const s of m.keys()) steps.add(s);
    const xs = [...steps].sort((a, b) => a - b);
    return [xs, ...seriesMaps.map((m) => xs.map((s) => (m.has(s) ? m.get(s) : null)))];
  }

  class Chart {
    // opts: {title, names, colors, height, log, smooth, mark: {step, label}, yLabel}
    constructor(container, opts) {
      this.container = container;
      this.opts = Object.assign({height: 260, log: false, smooth: 0, names: []}, opts);
      this.maps = this.opts.names.map(() => new Map());
      this.plot = null;
      this.pending = false;
      this.observer = new ResizeObserver(() => {
        if (this.plot) this.plot.setSize(this.size());
      });
      this.observer.observe(container);
    }

    size() {
      return {width: Math.max(200, this.container.clientWidth - 4), height: this.opts.height};
    }

    // Replaces series i's points with `entries` ([step, value] pairs), or appends them.
    set(i, entries, append = false) {
      if (!append) this.maps[i] = new Map();
      for (const [s, v] of entries) this.maps[i].set(s, v);
      this.schedule();
    }

    setOption(key, value) {
      this.opts[key] = value;
      this.destroy();  // a scale's distribution cannot change on a live uPlot
      this.schedule();
    }

    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }

    data() {
      const [xs, ...ys] = align(this.maps);
      return [xs, ...ys.map((y) => smooth(y, this.opts.smooth))];
    }

    draw() {
      const data = this.data();
      if (!data[0].length) return;
      // What is drawn, readable from outside (the browser tests watch curves grow).
      this.container.dataset.points = String(data[0].length);
      this.container.dataset.lastStep = String(data[0][data[0].length - 1]);
      // log needs positive values; losses of a WGAN are not, so asinh (linear near zero, log
      // beyond) is used whenever a value is at or below zero.
      const positive = data.slice(1).every((y) => y.every((v) => v === null || v > 0));
      const y = this.opts.log ? (positive ? {distr: 3} : {distr: 4, asinh: 1e-3}) : {};
      if (this.plot && this.plotLog === this.opts.log && this.plotPositive === positive) {
        this.plot.setData(data);
        return;
      }
      this.destroy();
      this.plotLog = this.opts.log;
      this.plotPositive = positive;
      this.plot = new uPlot({
        ...this.size(),
        title: this.opts.title,
        scales: {x: {time: false}, y},
        axes: [{label: "step"}, {label: this.opts.yLabel || "", size: 60}],
        legend: {live: true},
        cursor: this.opts.sync ? {sync: {key: this.opts.sync}} : {},
        series: [{label: "step"}, ...this.opts.names.map((name, i) => ({
          label: name,
          stroke: (this.opts.colors || PALETTE)[i % PALETTE.length],
          width: 1.5,
          spanGaps: true,
          points: {show: this.opts.points || false},
          value: (u, v) => (v === null || v === undefined ? "–" : gand.num(v)),
        }))],
        hooks: {draw: [(u) => drawMark(u, this.opts.mark)]},
      }, data, this.container);
    }

    destroy() {
      if (this.plot) { this.plot.destroy(); this.plot = null; }
    }
  }

  // A dashed vertical line with a label at `mark.step` (the best evaluated step).
  function drawMark(u, mark) {
    if (!mark || mark.step === null || mark.step === undefined) return;
    const x = u.valToPos(mark.step, "x", true);
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = "#d97706";
    ctx.fillStyle = "#b45309";
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
    ctx.font = `${12 * devicePixelRatio}px sans-serif`;
    const text = mark.label || "best";
    const w = ctx.measureText(text).width;
    const tx = x + w + 8 > u.bbox.left + u.bbox.width ? x - w - 4 * devicePixelRatio : x + 4 * devicePixelRatio;
    ctx.fillText(text, tx, u.bbox.top + 14 * devicePixelRatio);
    ctx.restore();
  }

  return {Chart, PALETTE, smooth, align};
})();
