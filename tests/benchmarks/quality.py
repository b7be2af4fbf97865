#!/usr/bin/env python3
"""How well gand's recipes fight mode collapse, beside the papers' numbers (issue 12).

Trains `gan` on ring8 and grid25 with gand's defaults and with `--preset lecture`, one run per
seed, exactly as a worker would (gand.jobspec.build_config, then the trainer's loop), and
evaluates each with the `coverage` metric (the VEEGAN/PacGAN protocol: 2500 samples, a sample
is high-quality within 3 std of its nearest mode, reverse KL of the mode histogram to uniform).
Prints one JSON object: every run (modes, % high quality, KL, wall seconds), a summary per
recipe (min/mean/max, and whether every seed beats every anchor column), and the anchors.

    python tests/benchmarks/quality.py [--data ring8,grid25] [--recipes default,lecture]
        [--seeds 0,1,2,3,4] [--threads 1] [--plots DIR] [--stacked-mnist [--stacked-seeds 0,1]
        [--classifier FILE]]

`--plots DIR` keeps each run's final sample plot (with the 3-std circles) as
DIR/{data}-{recipe}-seed{N}.png. `--stacked-mnist` adds dcgan runs on `stacked-mnist` with the
`stacked-modes` metric (modes out of 1000, KL) when both are installed, and a row saying "not
available" otherwise. It is a benchmark, not a test: quote the machine and its load with it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

ROOT = Path(__file__).resolve().parents[2]
MNIST = ROOT / "tests" / "data" / "mnist"

# PacGAN (Lin et al. 2018) Table 1 (means of 10 runs) and VEEGAN (Srivastava et al. 2017), on
# the same protocol. Stacked MNIST: VEEGAN's DCGAN and PacGAN's PacDCGAN2.
ANCHORS: dict[str, dict[str, dict[str, float]]] = {
    "ring8": {"GAN": {"modes": 6.3, "hq_percent": 98.2, "mode_kl": 0.45},
              "PacGAN2": {"modes": 7.9, "hq_percent": 95.6, "mode_kl": 0.07},
              "VEEGAN": {"modes": 8.0, "hq_percent": 52.9}},
    "grid25": {"GAN": {"modes": 17.3, "hq_percent": 94.8, "mode_kl": 0.70},
               "PacGAN4": {"modes": 24.8, "hq_percent": 93.6, "mode_kl": 0.04},
               "VEEGAN": {"modes": 24.6, "hq_percent": 40.0}},
    "stacked-mnist": {"DCGAN": {"modes": 99, "mode_kl": 3.4},
                      "PacDCGAN2": {"modes": 1000, "mode_kl": 0.06}},
}
# The goal: every anchor column beaten on every seed.
GOALS = {"ring8": {"modes": 8, "hq_percent": 98.3, "mode_kl": 0.05},
         "grid25": {"modes": 25, "hq_percent": 95.0, "mode_kl": 0.03},
         "stacked-mnist": {"modes": 1000, "mode_kl": 0.05}}
KEYS = ("modes", "hq_percent", "mode_kl")


def meets(values: dict[str, float], goal: dict[str, float]) -> bool:
    """True when every goal column is met (modes and % at least, KL at most)."""
    for key, want in goal.items():
        got = values.get(key)
        if got is None or (got > want if key.endswith("kl") else got < want):
            return False
    return True


def train_and_measure(registry, variant: str, data: str, recipe: str, seed: int,
                      metric: str, plots: Optional[Path], evaluation: dict[str, Any]) -> dict:
    """One job as a worker would run it (defaults or a preset), then `metric` on its result."""
    from gand.engine.trainer import Hooks, Run, train
    from gand.evaluation.run import Evaluator
    from gand.jobspec import build_config

    preset = None if recipe == "default" else recipe
    cfg = build_config(registry, variant=variant, data=data, seed=seed, device="cpu",
                       preset=preset, checkpoint_every=0, sample_every=0)
    start, cpu = time.monotonic(), time.process_time()
    run = Run.build(cfg, registry)
    with tempfile.TemporaryDirectory() as tmp:
        assert train(run, Path(tmp), Hooks()).reason == "completed"
        seconds, cpu = time.monotonic() - start, time.process_time() - cpu
        pictures = sorted((Path(tmp) / "samples").glob("*.png"))
        if plots is not None and pictures:
            plots.mkdir(parents=True, exist_ok=True)
            shutil.copy(pictures[-1], plots / f"{data.split(':')[0]}-{recipe}-seed{seed}.png")
    ev = Evaluator(run, registry, [metric], data=run.data[0], **evaluation)
    values = ev.evaluate(cfg.steps)[0].values
    return {"data": data.split(":")[0], "recipe": recipe, "seed": seed, "steps": cfg.steps,
            "batch_size": cfg.batch_size, **{k: round(v, 4) for k, v in values.items()},
            # Wall time, and the CPU time of this process: on a shared machine the wall time
            # says as much about the neighbours as about gand.
            "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1)}


def summary(rows: list[dict], goal: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(rows), "seeds_meeting_goal": sum(meets(r, goal) for r in rows)}
    for key in (*KEYS, "seconds", "cpu_seconds"):
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[key] = {"min": min(vals), "mean": round(statistics.fmean(vals), 4),
                        "max": max(vals)}
    return out


def stacked_rows(registry, seeds: list[int], classifier: Optional[str],
                 plots: Optional[Path]) -> list[dict]:
    """dcgan on Stacked MNIST, or one row saying why it cannot run here."""
    missing = [what for what, there in (("dataset stacked-mnist", "stacked-mnist" in registry.datasets),
                                        ("metric stacked-modes", "stacked-modes" in registry.metrics))
               if not there]
    if missing:
        return [{"data": "stacked-mnist", "status": f"not available: {' and '.join(missing)} "
                                                    f"not installed"}]
    metric = registry.metrics["stacked-modes"]
    if getattr(metric, "needs_classifier", False) and not classifier:
        return [{"data": "stacked-mnist", "status": "not available: the stacked-modes metric "
                                                    "needs --classifier FILE"}]
    return [train_and_measure(registry, "dcgan", f"stacked-mnist:{MNIST}", "default", s,
                              "stacked-modes", plots, {"classifier": classifier})
            for s in seeds]


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="ring8,grid25")
    p.add_argument("--recipes", default="default,lecture")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    p.add_argument("--plots", type=Path, default=None)
    p.add_argument("--stacked-mnist", action="store_true")
    p.add_argument("--stacked-seeds", default="0,1")
    p.add_argument("--classifier", default=None, help="MNIST classifier file for stacked-modes")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from gand import plugins

    registry = plugins.load()
    seeds = [int(s) for s in args.seeds.split(",")]
    load_before = os.getloadavg()
    runs, summaries = [], {}
    for data in args.data.split(","):
        for recipe in args.recipes.split(","):
            rows = []
            for seed in seeds:
                row = train_and_measure(registry, "gan", data, recipe, seed, "coverage",
                                        args.plots, {})
                print(json.dumps(row), file=sys.stderr, flush=True)  # progress
                rows.append(row)
            runs += rows
            summaries[f"{data}/{recipe}"] = summary(rows, GOALS[data])
    if args.stacked_mnist:
        rows = stacked_rows(registry, [int(s) for s in args.stacked_seeds.split(",")],
                            args.classifier, args.plots)
        runs += rows
        if "status" not in rows[0]:
            summaries["stacked-mnist/default"] = summary(rows, GOALS["stacked-mnist"])
    print(json.dumps({
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": args.threads, "torch": torch.__version__,
                    "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in os.getloadavg()],
                    "date": time.strftime("%Y-%m-%d %H:%M %Z")},
        "goals": GOALS, "anchors": ANCHORS, "summary": summaries, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
