#!/usr/bin/env python3
"""The fleet's GPU check (issue "The fleet", docs/fleet.md): run it on a GPU machine.

    bash deploy/gpu-check.sh            # on a GPU machine: under 8 minutes
    bash deploy/gpu-check.sh --dry      # anywhere: fake GPUs on the CPU, tiny jobs (plumbing)

0. The tests that need CUDA (tests/test_cuda_graphs.py: a graphed step follows the eager loss
   trajectory and resumes; a step that cannot be captured trains eagerly with a note).
1. A CUDA job end to end through `gand worker --gpus all`: one MNIST DCGAN job per GPU, each
   on its own child (CUDA_VISIBLE_DEVICES by UUID); all must succeed on distinct slots.
2. Packing: K = 1, 2, 4 MNIST DCGAN jobs (batch 64) on GPU 0 with `--jobs-per-gpu K`; the
   aggregate images per second (all jobs' images over the wall time from the first start to
   the last finish) and its ratio to K = 1. Goal: at least 3x for K = 4.
Prints one JSON object; writes nothing outside a temporary folder.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "tests" / "data" / "mnist"
DRY = "--dry" in sys.argv
STEPS = int(os.environ.get("GAND_GPU_CHECK_STEPS", 20 if DRY else 2000))
BATCH = 64


def gand(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "gand", *args], env=env, capture_output=True,
                       text=True, timeout=900)
    print(f"[{time.monotonic() - t:6.1f}s] gand {' '.join(args[:3])} rc={p.returncode}",
          file=sys.stderr, flush=True)
    if check and p.returncode:
        raise SystemExit(f"gand {' '.join(args)} failed:\n{p.stderr[-2000:]}")
    return p


def fresh_env(tmp: Path, name: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAND_") or k == "GAND_FAKE_GPUS"}
    env.update(GAND_HOME=str(tmp / name), GAND_CONFIG=str(tmp / "none.toml"),
               GAND_LEASE_SECONDS="30")
    return env


def submit(env: dict, n: int, sets: tuple[str, ...] = ()) -> list[str]:
    extra = [] if DRY else ["--gpus", "1"]
    for s in sets:
        extra += ["--set", s]
    return [json.loads(gand(env, "submit", "dcgan", "--data", f"mnist:{MNIST}", "--steps",
                            str(STEPS), "--batch-size", str(BATCH), "--checkpoint-every", "0",
                            "--sample-every", "0", "--seed", str(i), *extra, "--json").stdout)["id"]
            for i in range(n)]


def show(env: dict, job: str) -> dict:
    return json.loads(gand(env, "show", job, "--json").stdout)


def cuda_tests() -> dict:
    """pytest on the tests that skip without CUDA; their outcome and the last lines."""
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(ROOT / "tests" / "test_cuda_graphs.py"),
                        str(ROOT / "tests" / "test_background_checkpoints.py") + "::test_on_cuda_"
                        "a_snapshot_copies_on_a_side_stream_that_the_optimizer_step_waits_for"],
                       cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    return {"passed": p.returncode == 0, "seconds": round(time.monotonic() - t, 1),
            "tail": (p.stdout + p.stderr).strip().splitlines()[-25:]}


def end_to_end(tmp: Path) -> dict:
    env = fresh_env(tmp, "e2e")
    from gand_workers.gpus import discover

    found = discover()
    # The non-default fast paths (bf16 autocast, channels_last), through a checkpoint and a resume.
    jobs = submit(env, len(found), () if DRY else ("precision=bf16", "channels_last=true"))
    started = time.monotonic()
    gand(env, "worker", "--gpus", "all", "--burst", "--loglevel", "WARNING")
    gand(env, "resume", jobs[0], "--steps", str(STEPS + 100))
    gand(env, "worker", "--gpus", "all", "--burst", "--loglevel", "WARNING")
    shown = [show(env, j) for j in jobs]
    workers = {w["worker"]: w for w in json.loads(gand(env, "workers", "--json").stdout)}
    slots = [workers[next(e["worker"] for e in j["events"] if e["reason"] == "claimed")]["slot"]
             for j in shown]
    return {"gpus": [g.to_json() for g in found], "jobs": len(jobs),
            "succeeded": sum(j["status"] == "succeeded" for j in shown),
            "slots": slots, "distinct_slots": len(set(slots)) == len(slots),
            "resumed_to": shown[0]["step"], "runtime": [j["config"].get("runtime") for j in shown],
            "seconds": round(time.monotonic() - started, 1),
            "img_per_s_per_job": [round(j["metrics"].get("img_per_s", 0)) for j in shown]}


def packing(tmp: Path, k: int) -> dict:
    env = fresh_env(tmp, f"pack{k}")
    jobs = submit(env, k)
    gand(env, "worker", "--gpus", "0", "--jobs-per-gpu", str(k), "--burst", "--loglevel",
         "WARNING")
    shown = [show(env, j) for j in jobs]
    assert all(j["status"] == "succeeded" for j in shown), [j["error"] for j in shown]
    first = min(datetime.fromisoformat(j["started_at"]) for j in shown)
    last = max(datetime.fromisoformat(j["finished_at"]) for j in shown)
    wall = (last - first).total_seconds()
    return {"k": k, "wall_s": round(wall, 1), "img_per_s": round(k * STEPS * BATCH / wall)}


def main() -> None:
    if DRY:
        os.environ.setdefault("GAND_FAKE_GPUS", "GPU-dry-0:Fake GPU:16384")
    with tempfile.TemporaryDirectory(prefix="gand-gpu-check-") as t:
        tmp = Path(t)
        result = {"machine": f"{platform.node()} {platform.machine()}", "dry": DRY,
                  "date": datetime.now().isoformat(timespec="minutes")}
        if not DRY:
            result["cuda_tests"] = cuda_tests()
            print(json.dumps(result["cuda_tests"]), file=sys.stderr, flush=True)
        result["end_to_end"] = end_to_end(tmp)
        runs = [packing(tmp, k) for k in (1, 2, 4)]
        for r in runs:
            r["vs_k1"] = round(r["img_per_s"] / runs[0]["img_per_s"], 2)
        result["packing"] = runs
        result["goal_k4_at_least_3x"] = runs[-1]["vs_k1"] >= 3.0
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
