#!/usr/bin/env python3
"""Latency from submit to the first training step, with one warm worker that sits idle.

    python tests/benchmarks/latency.py [--broker filesystem|redis|redis://HOST:PORT/DB]
                                       [--jobs 20]

What is timed, from what the store records (both times are written by the store, on one host):

- submit: the job row's `created_at`, written by `JobService.submit` just before the broker
  message is sent (the broker check before it is left out: nothing has been asked of the
  worker yet);
- first step: the `time` of the job's first metric row. The training loop reports its first
  step at once (gand/engine/trainer.py), so that row is written right after step 1 ends.

Split in two: `wake` (created_at → started_at, the claim: the broker wakes the worker, which
claims the job in the database) and `start` (started_at → first step: building the networks,
loading the data, restoring nothing, step 1).

Each job is submitted only after the previous one finished and the worker had been idle for a
random 0.5–1.5 s, so a submit lands at a random point of the worker's idle polling. The worker
is warmed by one job first (imports, plugin loading, first-use caches). A fresh GAND_HOME with a
SQLite store is made for each call; on Redis a private queue name keeps other users of that
database out (nothing is flushed). Not a test: timings are not assertions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REDIS = os.environ.get("GAND_BENCH_REDIS") or os.environ.get(
    "GAND_TEST_REDIS", "redis://127.0.0.1:6379/12")
JOB = {"variant": "gan", "data": "ring8", "steps": 2, "checkpoint_every": 0, "sample_every": 0}


def measure(broker: str = "filesystem", jobs: int = 20, timeout: float = 600.0) -> dict:
    """Submit → first step over `jobs` jobs on an idle warm worker; a flat dict of seconds.

    `broker`: "filesystem" (gand's embedded broker), "redis" (DEFAULT_REDIS) or a redis:// URL.
    Starts its own worker and client processes; changes nothing in the calling process.
    """
    url = DEFAULT_REDIS if broker == "redis" else broker
    with tempfile.TemporaryDirectory(prefix="gand-latency-") as tmp:
        home = Path(tmp)
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GAND_")}
        env.update({"GAND_HOME": str(home), "GAND_CONFIG": str(home / "config.toml"),
                    "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        if url != "filesystem":
            env["GAND_BROKER_URL"] = url
        # The store exists before the worker and the client race to create it.
        subprocess.run([sys.executable, "-m", "gand", "list"], env=env, cwd=home, check=True,
                       capture_output=True, timeout=120)
        log = open(home / "worker.log", "w")
        worker = subprocess.Popen([sys.executable, "-m", "gand", "worker", "--queues", queue],
                                  env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            client = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--client",
                                     "--queue", queue, "--jobs", str(jobs)], env=env, cwd=home,
                                    timeout=timeout, capture_output=True, text=True)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
            log.close()
        if client.returncode != 0:
            raise RuntimeError(f"latency client failed:\n{client.stderr[-3000:]}\n"
                               f"worker log:\n{(home / 'worker.log').read_text()[-3000:]}")
        samples = json.loads(client.stdout.strip().splitlines()[-1])
    total = [s["total"] for s in samples]
    return {"broker": "filesystem" if url == "filesystem" else "redis", "jobs": len(total),
            "p50_s": round(_pct(total, 50), 3), "p95_s": round(_pct(total, 95), 3),
            "max_s": round(max(total), 3),
            "wake_p50_s": round(_pct([s["wake"] for s in samples], 50), 3),
            "start_p50_s": round(_pct([s["start"] for s in samples], 50), 3),
            "load_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine()}


def _pct(values: list[float], p: float) -> float:
    """The p-th percentile, interpolated between the closest ranks."""
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    k = (len(values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def _client(queue: str, jobs: int) -> list[dict]:
    """Runs in the benchmark's environment: submits one job at a time and reads its times."""
    from gand import plugins
    from gand.jobs.service import JobService
    from gand.store import TERMINAL

    svc, registry = JobService(), plugins.registry()
    store = svc.store
    out = []
    for i in range(jobs + 1):  # the first one warms the worker up and is not counted
        time.sleep(random.uniform(0.5, 1.5))  # idle, at a random phase of its polling
        job = svc.submit(registry, queue=queue, **JOB)
        deadline = time.monotonic() + 120
        while (j := store.get_job(job.id)).status not in TERMINAL:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job.id} is still {j.status.value} after 120 s")
            time.sleep(0.05)
        if j.status.value != "succeeded":
            raise RuntimeError(f"job {job.id} ended {j.status.value}: {j.error}")
        first = min(m.time for m in store.metrics(job.id))
        if i:
            out.append({"total": (first - j.created_at).total_seconds(),
                        "wake": (j.started_at - j.created_at).total_seconds(),
                        "start": (first - j.started_at).total_seconds()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", default="filesystem",
                    help="filesystem (embedded), redis, or a redis:// URL")
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--queue", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.client:
        print(json.dumps(_client(a.queue, a.jobs)))
        return
    print(json.dumps(measure(a.broker, a.jobs)))


if __name__ == "__main__":
    main()
