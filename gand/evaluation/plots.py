"""Pictures of training curves: one job's losses and metrics, and several jobs overlaid.

Figures have a fixed size in pixels (FIGSIZE × DPI), so scripts and tests can rely on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DPI = 100
PANEL = (5.0, 3.5)   # inches per subplot
LOSS_KEYS = ("d_loss", "g_loss")


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display on workers and in tests
    import matplotlib.pyplot as plt

    return plt


def smooth(values: list[float], points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Index positions and means over equal windows, so 100k noisy steps plot as a curve."""
    v = np.asarray(values, dtype=float)
    if len(v) <= points:
        return np.arange(len(v)), v
    w = len(v) // points
    trimmed = v[: w * points].reshape(points, w)
    return np.arange(points) * w + w // 2, trimmed.mean(1)


def _curves(rows: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in sorted(rows, key=lambda r: r["step"]):
        if r["value"] is None:
            continue
        steps, values = out.setdefault(r["key"], ([], []))
        steps.append(r["step"])
        values.append(r["value"])
    return out


def panels(series: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """The panel names a figure of these series gets: losses first, then each evaluation key."""
    keys: set[str] = set()
    for s in series.values():
        keys |= {r["key"] for r in s.get("evaluations", [])}
    return ["losses"] + sorted(keys)


def plot(series: dict[str, dict[str, list[dict[str, Any]]]], out: Path, title: str = "") -> Path:
    """Losses and evaluation curves of one or more runs, overlaid run by run.

    `series` maps a run's label to {"metrics": rows, "evaluations": rows}, rows having step,
    key and value.
    """
    plt = _plt()
    names = panels(series)
    cols = min(3, len(names))
    nrows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(PANEL[0] * cols, PANEL[1] * nrows), dpi=DPI,
                             squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for label, s in series.items():
        loss_curves = _curves([r for r in s.get("metrics", []) if r["key"] in LOSS_KEYS])
        ax = axes.flat[0]
        for key, (steps, values) in sorted(loss_curves.items()):
            idx, v = smooth(values)
            ax.plot(np.asarray(steps)[idx], v, label=f"{label} {key}" if len(series) > 1 else key)
        evals = _curves(s.get("evaluations", []))
        for i, name in enumerate(names[1:], start=1):
            if name in evals:
                steps, values = evals[name]
                axes.flat[i].plot(steps, values, marker="o", label=label)
    for i, name in enumerate(names):
        ax = axes.flat[i]
        ax.set_title(name)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)  # no bbox_inches="tight": the size stays as declared
    plt.close(fig)
    return out


def expected_size(n_panels: int) -> tuple[int, int]:
    """(width, height) in pixels of a figure with `n_panels` panels."""
    cols = min(3, n_panels)
    nrows = (n_panels + cols - 1) // cols
    return int(round(PANEL[0] * cols * DPI)), int(round(PANEL[1] * nrows * DPI))


def plot_job(store, job, out: str | Path) -> dict[str, Any]:
    """`gand metrics JOB --plot FILE`: one job's curves, recorded as a "plot" artifact."""
    from gand.errors import UsageError

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--plot {out}: plots are written as PNG; use a path ending in .png")
    series = {job.name or job.variant: {"metrics": [m.to_json() for m in store.metrics(job.id)],
                                        "evaluations": [e.to_json() for e in store.evaluations(job.id)]}}
    plot(series, out, f"job {job.id[:12]} ({job.variant}, {job.loss})")
    store.add_artifact(job.id, "plot", str(out.resolve()), job.step)
    return {"job": job.id, "plot": str(out), "panels": panels(series)}


def path_plot(points: Any, out: Path, title: str = "") -> Path:
    """Vector outputs along a latent path: 2-D points joined in order, or 1-D values by index."""
    plt = _plt()
    p = np.asarray(points, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=DPI)
    t = np.linspace(0, 1, len(p))
    if p.shape[1] >= 2:
        ax.plot(p[:, 0], p[:, 1], color="grey", lw=0.8)
        sc = ax.scatter(p[:, 0], p[:, 1], c=t, cmap="viridis", s=25, zorder=3)
        ax.set_aspect("equal", adjustable="datalim")
    else:
        ax.plot(np.arange(len(p)), p[:, 0], color="grey", lw=0.8)
        sc = ax.scatter(np.arange(len(p)), p[:, 0], c=t, cmap="viridis", s=25, zorder=3)
        ax.set_xlabel("position on the path")
    fig.colorbar(sc, ax=ax, label="t")
    ax.set_title(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out
