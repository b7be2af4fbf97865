#!/usr/bin/env python3
"""How long the read-only commands take as a user runs them: a fresh `gand` process each time.

    python tests/benchmarks/bench_cli.py [--jobs 200] [--runs 15]

It fills a throw-away GAND_HOME (SQLite) with --jobs jobs, each with a config and 300 metric
rows, then times `gand list --json` and `gand show JOB --json` --runs times each and prints the
median and 90th percentile wall time as one JSON object. Not a test: timings are not assertions;
quote the machine with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def populate(home: Path, n: int) -> str:
    from gand import plugins
    from gand.jobspec import build_config
    from gand.store import Store

    store = Store(f"sqlite:///{home / 'gand.db'}")
    config = build_config(plugins.load(), variant="gan", data="ring8", steps=300).to_dict()
    last = None
    for i in range(n):
        job = store.create_job(variant="gan", loss="bce", data=["ring8"], config=config,
                               total_steps=300, name=f"bench-{i}")
        _, lease = store.claim(job.id, "bench", 60)
        rows = [(s, k, 0.5) for s in range(1, 101) for k in ("d_loss", "g_loss", "img_per_s")]
        store.add_metrics(job.id, rows, step=100, fence=lease)
        last = job.id
    store.close()
    return last


def timed(args: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gand", *args], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    times.sort()
    return {"median_s": round(statistics.median(times), 3),
            "p90_s": round(times[int(0.9 * (len(times) - 1))], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GAND_")}
        env.update(GAND_HOME=str(home), GAND_CONFIG=str(home / "none.toml"))
        os.environ.update(env)
        job = populate(home, args.jobs)
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "jobs": args.jobs, "runs": args.runs,
            "gand list --json": timed(["list", "--json"], env, args.runs),
            "gand show JOB --json": timed(["show", job, "--json"], env, args.runs),
            "python -c pass": timed_python(env, args.runs),
        }
    print(json.dumps(result, indent=2))


def timed_python(env: dict[str, str], runs: int) -> dict[str, float]:
    """The interpreter's own start-up, for scale."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 3)}


if __name__ == "__main__":
    main()
