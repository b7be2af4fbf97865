"""The evaluation part of a job's config: which metrics, how often, best-by, classifier.

Checked at submit time like everything else, so a wrong metric name or a missing classifier
file is refused before anything is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from gand.api import DataInfo, Metric, Option, parse_options
from gand.errors import GandError, PluginError, UsageError, one_of
from gand.jobs.config import MAX_STEPS
from gand.plugins import Registry

DEFAULT_SAMPLES = {"vector": 2500, "image": 1000}


def metric_class(registry: Registry, name: str) -> type[Metric]:
    metrics = getattr(registry, "metrics", {})
    if name not in metrics:
        raise UsageError(f"unknown metric {name!r}; installed: {one_of(metrics)}")
    return metrics[name]


def declared_options(classes: list[type[Metric]]) -> dict[str, Option]:
    """The options of the selected metrics in one namespace (a clash is a plugin's bug)."""
    out: dict[str, Option] = {}
    owner: dict[str, str] = {}
    for cls in classes:
        for key, opt in cls.options.items():
            if key in out:
                raise PluginError(f"metrics {owner[key]} and {cls.name} both declare option {key!r}")
            out[key], owner[key] = opt, cls.name
    return out


def resolve_best(registry: Registry, best_by: str, selected: list[str]) -> dict[str, str]:
    """`--best-by` as {metric, key, direction}: a metric's name (its headline) or a value key."""
    metrics = getattr(registry, "metrics", {})
    candidates = {}
    for name in selected:
        cls = metrics[name]
        for key, direction in cls.directions.items():
            candidates[key] = {"metric": name, "key": key, "direction": direction}
        if cls.headline:
            candidates[name] = {"metric": name, "key": cls.headline,
                                "direction": cls.directions[cls.headline]}
    if best_by not in candidates:
        raise UsageError(f"--best-by {best_by!r} is not a value of the job's metrics; valid: "
                         f"{one_of(candidates)}")
    return candidates[best_by]


def default_metrics(registry: Registry, info: DataInfo, classifier: Optional[str]) -> list[str]:
    """Every installed metric that can measure this data with what is at hand."""
    from gand.evaluation.features import inception_weights_path

    out = []
    for name, cls in sorted(getattr(registry, "metrics", {}).items()):
        try:
            cls().check(info, classifier)
        except GandError:
            continue
        if cls.uses_extractor and not classifier and not inception_weights_path().is_file():
            continue  # no feature extractor here; asking for it by name says what is missing
        out.append(name)
    return out


def eval_config(registry: Registry, info: DataInfo, *, every: Optional[int] = None,
                metrics: Optional[list[str]] = None, best_by: Optional[str] = None,
                classifier: Optional[str] = None, num_samples: Optional[int] = None,
                sets: Optional[dict[str, str]] = None) -> Optional[dict[str, Any]]:
    """The job config's "eval" entry, or None when the job is not evaluated while it trains."""
    if every is None:
        for flag, value in (("--best-by", best_by), ("--eval-metric", metrics),
                            ("--eval-classifier", classifier), ("--eval-n", num_samples),
                            ("--eval-set", sets)):
            if value:
                raise UsageError(f"{flag} needs --eval-every N (how often to evaluate)")
        return None
    if not 1 <= every <= MAX_STEPS:
        raise UsageError(f"--eval-every {every} is invalid; expected an integer from 1 to "
                         f"{MAX_STEPS}")
    if num_samples is not None and not 2 <= num_samples <= 100_000:
        raise UsageError(f"--eval-n {num_samples} is invalid; expected 2 to 100000")
    if classifier:
        from gand.evaluation import classifier as clf

        if not classifier.isprintable():
            raise UsageError(f"--eval-classifier {classifier!r} is invalid: it holds a control "
                             f"character")
        path = Path(classifier).expanduser().resolve()
        clf.load(path)  # refuses a missing or foreign file now, not at the first evaluation
        classifier = str(path)
    names = list(dict.fromkeys(metrics or [])) or default_metrics(registry, info, classifier)
    classes = [metric_class(registry, n) for n in names]
    for cls in classes:
        cls().check(info, classifier)
    best = resolve_best(registry, best_by, names) if best_by else None
    options = parse_options(declared_options(classes), dict(sets or {}))
    return {"every": every, "metrics": names, "best_by": best, "classifier": classifier,
            "num_samples": num_samples or DEFAULT_SAMPLES.get(info.kind, 1000),
            "options": options}
