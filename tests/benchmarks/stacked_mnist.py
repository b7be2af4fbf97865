#!/usr/bin/env python3
"""Stacked MNIST mode coverage of gand's `dcgan`, through real gand jobs, beside the papers.

For each seed it submits `gand submit dcgan --data stacked-mnist:tests/data/mnist ...` evaluated
at the end with `stacked-modes` (26,000 samples, each channel read by gand's MNIST classifier),
runs it with `gand worker --burst` in a throw-away GAND_HOME, and prints one JSON line per seed:
modes (of 1000), KL(mode histogram ‖ uniform), steps, wall seconds, settings. The first lines
are the anchors (the published numbers issue 12 quotes) and the classifier's held-out accuracy.

    python tests/benchmarks/stacked_mnist.py [--seeds 0,1] [--steps N] [--set ngf=16 ...]
        [--lr LR] [--batch-size 64] [--eval-every N] [--classifier FILE] [--samples-to DIR]

It is a benchmark, not a test: nothing is asserted. Quote the machine and its load with the
table (docs/stacked-mnist.md). `--samples-to DIR` copies each run's final sample grid there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MNIST = ROOT / "tests" / "data" / "mnist"

# Published Stacked MNIST results (26,000 samples, 1000 modes, KL(q ‖ uniform)).
ANCHORS = [
    {"anchor": "DCGAN (VEEGAN, Srivastava et al. 2017; PacGAN Table 3)", "modes": 99, "kl": 3.4},
    {"anchor": "PacDCGAN2 (PacGAN, Lin et al. 2018, Table 3)", "modes": 1000, "kl": 0.06},
    {"anchor": "goal (issue 12)", "modes": 1000, "kl": 0.05},
]

# gand's chosen settings for dcgan on Stacked MNIST (see docs/stacked-mnist.md for the sweep).
DEFAULT_SETS = ["ngf=16", "ndf=16", "ema=0.99"]
DEFAULT_LR = 1e-3
DEFAULT_STEPS = 4000


def gand(env: dict[str, str], *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "gand", *args], env=env, capture_output=True,
                       text=True, timeout=timeout, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"gand {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds, one run each")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=DEFAULT_LR)
    ap.add_argument("--set", dest="sets", action="append", default=None,
                    help=f"dcgan option key=value (repeatable; default: {' '.join(DEFAULT_SETS)})")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="also evaluate every N steps (a learning curve; default: at the end)")
    ap.add_argument("--loss", default=None, help="loss plugin (default: dcgan's)")
    ap.add_argument("--classifier", default=None,
                    help="MNIST classifier file (default: train one with gand's defaults)")
    ap.add_argument("--samples-to", type=Path, default=None,
                    help="copy each run's final sample grid into this folder")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the worker")
    args = ap.parse_args()
    sets = DEFAULT_SETS if args.sets is None else args.sets

    home = Path(tempfile.mkdtemp(prefix="gand-stacked-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAND_")}
    env.update({"GAND_HOME": str(home), "GAND_CONFIG": str(home / "config.toml"),
                "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"})

    for row in ANCHORS:
        print(json.dumps(row), flush=True)
    classifier = args.classifier
    if classifier is None:
        classifier = str(home / "mnist-classifier.pt")
        t0 = time.monotonic()
        meta = json.loads(gand(env, "eval", "train-classifier", "--data", f"mnist:{MNIST}",
                               "--out", classifier, "--json").stdout)
        meta["wall_s"] = round(time.monotonic() - t0, 1)
    else:
        import torch

        meta = torch.load(classifier, weights_only=True)["meta"]
    print(json.dumps({"classifier": classifier, "holdout_accuracy": meta.get("holdout_accuracy"),
                      "holdout_images": meta.get("holdout_images"),
                      "train_images": meta.get("train_images"), "epochs": meta.get("epochs"),
                      **({"wall_s": meta["wall_s"]} if "wall_s" in meta else {})}), flush=True)

    machine = {"machine": platform.node(), "cpus": os.cpu_count(), "torch_threads": args.threads,
               "load_before": round(os.getloadavg()[0], 2)}
    for seed in (int(s) for s in args.seeds.split(",")):
        submit = ["submit", "dcgan", "--data", f"stacked-mnist:{MNIST}", "--steps", str(args.steps),
                  "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(seed),
                  "--device", "cpu", "--eval-every", str(args.eval_every or args.steps), "--eval-metric",
                  "stacked-modes", "--eval-classifier", classifier,
                  "--sample-every", str(args.steps), "--checkpoint-every", str(args.steps),
                  "--name", f"stacked-{seed}", "--json"]
        for s in sets:
            submit += ["--set", s]
        if args.loss:
            submit += ["--loss", args.loss]
        job = json.loads(gand(env, *submit).stdout)["id"]
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        gand(env, "worker", "--burst")
        wall = time.monotonic() - t0
        shown = json.loads(gand(env, "show", job, "--json").stdout)
        final = {e["key"]: e["value"] for e in shown["evaluations"] if e["step"] == args.steps}
        curve = {}
        for e in shown["evaluations"]:
            curve.setdefault(e["step"], {})[e["key"]] = e["value"]
        row = {"seed": seed, "status": shown["status"], "modes": final.get("modes"),
               "kl": final.get("mode_kl"), "steps": args.steps, "wall_s": round(wall, 1),
               "load_at_start": round(load, 2), "batch_size": args.batch_size, "lr": args.lr,
               "sets": sets, "loss": shown["loss"], "job": job, **machine,
               "curve": [[step, v.get("modes"), v.get("mode_kl")] for step, v in sorted(curve.items())]}
        grids = [a["path"] for a in shown["artifacts"] if a["kind"] == "samples"]
        if args.samples_to and grids:
            args.samples_to.mkdir(parents=True, exist_ok=True)
            src = Path(grids[-1])
            src = src if src.is_absolute() else home / src
            row["samples"] = str(shutil.copy(src, args.samples_to / f"stacked-mnist-seed{seed}.png"))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
