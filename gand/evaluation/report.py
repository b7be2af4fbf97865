"""Summaries of a job's recorded evaluations: the latest values, the best, side by side."""
from __future__ import annotations

from typing import Any, Optional


def latest(evaluations: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each value key's row at the greatest step it was evaluated (later rows win ties)."""
    out: dict[str, dict[str, Any]] = {}
    for e in evaluations:
        if e["key"] not in out or e["step"] >= out[e["key"]]["step"]:
            out[e["key"]] = e
    return out


def best(evaluations: list[dict[str, Any]], directions: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each key's best row by its declared direction; keys without a direction are left out."""
    out: dict[str, dict[str, Any]] = {}
    for e in evaluations:
        d = directions.get(e["key"])
        if d is None or e["value"] is None:
            continue
        held = out.get(e["key"])
        if held is None or (e["value"] < held["value"] if d == "min" else e["value"] > held["value"]):
            out[e["key"]] = e
    return out


def directions(registry) -> dict[str, str]:
    """Which way is better for every value key the installed metrics report."""
    out: dict[str, str] = {}
    for cls in getattr(registry, "metrics", {}).values():
        out.update(cls.directions)
    return out


def latest_lines(evaluations: list[dict[str, Any]]) -> list[str]:
    """One line per metric: its latest values and the protocol they were measured with."""
    rows = latest(evaluations)
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for e in rows.values():
        by_metric.setdefault(e["metric"], []).append(e)
    lines = []
    for metric, es in sorted(by_metric.items()):
        es.sort(key=lambda e: e["key"])
        values = "  ".join(f"{e['key']}={_fmt(e['value'])}" for e in es)
        p = es[0]
        how = ", ".join(x for x in (p["extractor"], f"n={p['num_samples']}" if p["num_samples"]
                                    else None, p["reference"]) if x)
        lines.append(f"{metric:15} step {p['step']}  {values}  ({how})")
    return lines


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.4g}"
