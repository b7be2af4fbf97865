"""What the dashboard's API reads from a request and hands back: parameters checked into values
or a UsageError (a 400 naming the bad value), and data shaped like the CLI's --json output.

Pure functions, no I/O: the routes in api.py call the job service and these.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Optional

from gand.errors import UsageError

MAX_COMPARE = 8        # jobs overlaid on one compare page: more is unreadable
MAX_POINTS = 100_000   # `points=` above this is no reduction at all


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None (JSON has neither; a diverged
    GAN's losses are NaN, and the page must still load)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(json_safe(value), separators=(",", ":"), default=str, allow_nan=False)


def parse_int(name: str, text: Optional[str], lo: int, hi: int) -> Optional[int]:
    """An optional integer query parameter within [lo, hi]."""
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name}={text!r} is invalid; expected an integer") from None
    if not lo <= value <= hi:
        raise UsageError(f"{name}={value} is invalid; expected {lo} to {hi}")
    return value


def parse_float(name: str, text: Optional[str], lo: float, hi: float,
                default: float) -> float:
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name}={text!r} is invalid; expected a number") from None
    if not lo < value <= hi:
        raise UsageError(f"{name}={value} is invalid; expected {lo} < {name} ≤ {hi}")
    return value


def parse_list(name: str, text: Optional[str], limit: int) -> list[str]:
    """A comma-separated parameter: its distinct non-empty items in order, at most `limit`."""
    items: list[str] = []
    for item in (text or "").split(","):
        item = item.strip()
        if item and item not in items:
            items.append(item)
    if len(items) > limit:
        raise UsageError(f"{name}= names {len(items)} items; at most {limit}")
    if any(len(i) > 200 or not i.isprintable() for i in items):
        raise UsageError(f"{name}= holds an invalid item; expected short printable names")
    return items


def metric_rows(metrics: Iterable[Any], keys: list[str], points: Optional[int]) -> list[dict]:
    """Metric rows in the shape of `gand metrics --json`, only `keys` if any, and with at most
    about `points` rows per key (every k-th step, always the last) if `points` is given."""
    by_key: dict[str, list[Any]] = {}
    for m in metrics:
        if not keys or m.key in keys:
            by_key.setdefault(m.key, []).append(m)
    rows = []
    for key, series in by_key.items():
        if points and len(series) > points:
            stride = math.ceil(len(series) / points)
            series = series[::stride] + ([series[-1]] if (len(series) - 1) % stride else [])
        rows += [{"step": m.step, "key": m.key, "value": m.value, "time": m.time.isoformat(),
                  "epoch": m.epoch} for m in series]
    rows.sort(key=lambda r: (r["step"], r["key"]))
    return rows


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (`options.lr`, `data.0.spec`), leaves as they are."""
    if isinstance(config, dict) and config:
        out: dict[str, Any] = {}
        for k, v in config.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(config, list) and config:
        out = {}
        for i, v in enumerate(config):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: config}


def config_diff(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every dotted key of the configs with each job's value (None where a job lacks it), and
    whether the values differ: the compare page highlights those rows."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    rows = []
    for key in keys:
        values = [f.get(key) for f in flat]
        rows.append({"key": key, "values": values,
                     "differs": any(dumps(v) != dumps(values[0]) for v in values)})
    return rows
