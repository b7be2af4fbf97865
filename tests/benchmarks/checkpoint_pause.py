#!/usr/bin/env python3
"""How long the training loop pauses per checkpoint, now that checkpoints are written off the step.

    python tests/benchmarks/checkpoint_pause.py [--configs cyclegan256,mnist-dcgan]
                                                [--device cpu|cuda] [--checkpoints 4]

For each config it reports, in milliseconds (medians):

- pause_ms: what the loop's own `ckpt_pause_ms` metric says it was blocked per checkpoint (the
  median from the second on; pause_first_ms: the first, which allocates its host copy) in
  a real run of gand's loop (gand.engine.trainer.train) with background checkpoints, each
  written as the worker writes it (gand.engine.checkpoint.save: torch's file format, sha256,
  temp file, fsync, rename); the store row is left out (one small transaction). The pause
  copies what is not the optimizers'; their tensors (deferred_mb) are copied beside the next
  step (gand.engine.snapshot), and any wait of its first optimizer step for that copy is
  counted in the pause too;
- copy_ms: the device-to-host copy of the checkpoint state alone into new host memory
  (ckpt.to_host(run.state())), the goal's yardstick; each timed right after a step, as in the
  loop, where a step takes under 0.5 s;
- refill_ms: the same copy into the buffers of an earlier copy, as the loop makes it from its
  second checkpoint on (no allocation, no page faults, no pinning): the floor of the pause;
- sync_save_ms: a plain synchronous save of the live state, the way the loop paused before
  checkpoints went to the background (non-finite weight check, save, sha256, fsynced write);
- write_ms: the background write's time (`ckpt_write_ms`), which training now overlaps: from
  the pause to the file in place, so it includes waiting for the next optimizer step, before
  which the file may not be put in place (its copy is not known to be sound until then);
- step_ms and loop_step_ms: a step without checkpoints, and a step of the checkpointing run
  while a write runs beside it, its pause taken out (what a background write costs the steps
  it overlaps: CPU cores or, on a GPU, the interpreter lock);
- python_share_gand and python_share_torch_save: the pace a pure-Python loop keeps (1.0: all of
  it) while another thread writes this checkpoint over and over, with gand's writer
  (gand.engine.torchfile: tensor bytes hashed and written with the lock released) and with
  `torch.save` into memory as before (which holds the lock while it copies the bytes). On a GPU
  the training thread is such a loop: it launches kernels.

Checkpoints are spaced so that each write can finish before the next checkpoint (3 times
the synchronous save's time apart, in steps, at least 2 steps: a write beside training takes
up to twice the synchronous save, and waits for the next optimizer step); closer ones would
also wait for the previous write, which is bounded to one in flight. CycleGAN 256 at batch 1 carries its
two 50-image pools in its checkpoint (about 80 MB of the whole). Not a test: timings are not
assertions. `measure()` is importable without side effects and returns a flat dict.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
MNIST = ROOT / "tests" / "data" / "mnist"

# config → (variant, loss, data spec maker, batch size)
CONFIGS: dict[str, tuple[str, str | None, Callable[[Path], str], int]] = {
    "cyclegan256": ("cyclegan", None,
                    lambda tmp: f"{_rgb_folder(tmp, 256, 8, 'a')},{_rgb_folder(tmp, 256, 8, 'b')}", 1),
    "mnist-dcgan": ("dcgan", "bce", lambda tmp: f"mnist:{MNIST}", 64),
    "ring8-gan": ("gan", "bce", lambda tmp: "ring8", 256),
}


def _rgb_folder(tmp: Path, size: int, n: int, name: str) -> str:
    from bench import rgb_folder  # bench.py's random image pool (imported late: it loads torch)

    return rgb_folder(tmp, size, n, name)


def measure(variant_config: str = "cyclegan256", device: str = "cpu", checkpoints: int = 4,
            repeats: int = 5) -> dict:
    """The pause per checkpoint for one config on one device; a flat dict (times in ms).

    `checkpoints` (at least 2) are taken in one run of the loop. On a CPU, CycleGAN 256 takes
    10-30 s a step: with checkpoints=3 it needs about 5 steps and one sample grid.
    """
    checkpoints = max(2, checkpoints)
    import torch

    from gand import plugins
    from gand.engine import checkpoint as ckpt
    from gand.engine import faults
    from gand.engine.snapshot import Snapshot
    from gand.engine.trainer import Hooks, Run, train
    from gand.jobspec import build_config

    variant, loss, data, bs = CONFIGS[variant_config]
    registry = plugins.load()
    with tempfile.TemporaryDirectory(prefix="gand-ckpt-pause-") as tmp_name:
        tmp = Path(tmp_name)
        cfg = build_config(registry, variant=variant, loss=loss, data=data(tmp), steps=2,
                           batch_size=bs, seed=0, device=device, checkpoint_every=0,
                           sample_every=0)
        run = Run.build(cfg, registry)
        cuda = run.device.type == "cuda"
        sync = (lambda: torch.cuda.synchronize(run.device)) if cuda else (lambda: None)
        folder = tmp / "checkpoints"
        step = 0

        def steps(n: int, every: int = 0, hooks: Hooks | None = None) -> float:
            """Trains n more steps (its final checkpoint included); seconds taken."""
            nonlocal step
            run.config = dataclasses.replace(cfg, steps=step + n, checkpoint_every=every)
            sync()
            t0 = time.perf_counter()
            train(run, tmp / "run", hooks or Hooks(), start_step=step)
            sync()
            step += n
            return time.perf_counter() - t0

        def timed(fn) -> float:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            return (time.perf_counter() - t0) * 1000

        def sync_save() -> None:  # the loop's pause before checkpoints went to the background
            assert faults.non_finite_weight(run.models) is None
            ckpt.save(folder / "sync.pt", run.state(step))

        steps(1)  # warm-up: first-use costs, and the optimizers' state is allocated
        one_ms = timed(lambda: run.variant.train_step(run.models, run.loss, run.context(step)))

        def after_a_step(fn) -> float:
            # In the loop the copy follows a step, which leaves the caches full of its own
            # tensors: so does each timed copy here, where a step is cheap enough.
            if one_ms < 500:
                run.variant.train_step(run.models, run.loss, run.context(step))
            return timed(fn)

        host = ckpt.to_host(run.state(step))
        copy_ms = statistics.median(after_a_step(lambda: ckpt.to_host(run.state(step)))
                                    for _ in range(repeats))
        refill_ms = statistics.median(
            after_a_step(lambda: ckpt.to_host(run.state(step), into=host)) for _ in range(repeats))
        sync_ms = statistics.median(timed(sync_save) for _ in range(repeats))
        shares = python_shares({"gand": lambda: ckpt.save(folder / "share.pt", host),
                                "torch_save": lambda: torch_save_write(folder / "share.pt", host)},
                               seconds=max(1.0, 2 * sync_ms / 1000))
        del host
        nbytes = (folder / "sync.pt").stat().st_size
        probe = Snapshot(run.state(step), list(run.models.optimizers.values()))
        deferred = probe.deferred_bytes
        probe.release()
        del probe
        if one_ms < 500:
            # A step: 2K steps less K steps, so each run's end (its final host copy and sample
            # grid) cancels out. A slow step (CycleGAN 256 on a CPU) is timed once instead.
            k = 2
            while (t1 := steps(k)) < 0.5 and k < 4096:
                k *= 2
            step_ms = max(steps(2 * k) - t1, 1e-6) * 1000 / k
        else:
            step_ms = one_ms
        every = max(2, math.ceil(3 * sync_ms / step_ms))

        def write(s: int, state: dict) -> None:  # what the worker does, less the store row
            path = folder / ckpt.file_name(s)
            ckpt.save(path, state)
            for old in folder.glob("step_*.pt"):
                if old != path:
                    old.unlink()

        rows: list[tuple[int, str, float]] = []
        flushed: dict[int, float] = {}  # a checkpoint's step → when the loop reached it

        def report(batch: list, s: int) -> None:
            if s % every == 0:
                flushed.setdefault(s, time.perf_counter())
            rows.extend(batch)

        first = step
        steps(every * checkpoints, every, Hooks(checkpoint=write, report=report))
        pause_at = {s: v for s, key, v in rows if key == "ckpt_pause_ms"}
        pauses = [pause_at[s] for s in sorted(pause_at)]
        writes = [v for _, key, v in rows if key == "ckpt_write_ms"]
        marks = [s for s in sorted(flushed) if s > first]
        # Steps while a write runs beside them: from one checkpoint to the next, less its pause.
        between = [((flushed[b] - flushed[a]) * 1000 - pause_at.get(a, 0.0)) / (b - a)
                   for a, b in zip(marks, marks[1:])]
        loop_step_ms = statistics.median(between) if between else None
    # The first checkpoint allocates (and on CUDA pins) its host copy; later ones refill it.
    pause = statistics.median(pauses[1:])
    return {"config": variant_config, "device": str(run.device), "batch_size": bs,
            "checkpoint_mb": round(nbytes / 2**20, 1),
            "deferred_mb": round(deferred / 2**20, 1), "checkpoints": len(pauses),
            "steps_between": every, "pause_ms": round(pause, 1),
            "pause_first_ms": round(pauses[0], 1), "pause_max_ms": round(max(pauses[1:]), 1),
            "copy_ms": round(copy_ms, 1),
            "refill_ms": round(refill_ms, 1),
            "sync_save_ms": round(sync_ms, 1), "write_ms": round(statistics.median(writes), 1),
            "step_ms": round(step_ms, 2),
            "loop_step_ms": round(loop_step_ms, 2) if loop_step_ms is not None else None,
            "pause_vs_copy": round(pause / copy_ms, 2) if copy_ms else None,
            "pause_vs_sync_save": round(pause / sync_ms, 3),
            "python_share_gand": round(shares["gand"], 2),
            "python_share_torch_save": round(shares["torch_save"], 2),
            "load_1min": round(os.getloadavg()[0], 2)}


def torch_save_write(path: Path, state: dict) -> None:
    """How checkpoints were written before gand.engine.torchfile: torch.save into memory, then
    the same hash, fsynced write and rename as gand's."""
    import hashlib
    import io

    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    hashlib.sha256(buf.getbuffer()).hexdigest()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(buf.getbuffer())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def python_shares(writers: dict[str, Callable[[], None]], seconds: float,
                  pairs: int = 3) -> dict[str, float]:
    """For each writer: the pace of a pure-Python loop while it writes over and over in another
    thread, as a fraction of the loop's pace alone; timed in alternating windows of `seconds`,
    the median of `pairs`."""
    import threading

    def spin(until: float) -> float:
        n, t0 = 0, time.perf_counter()
        while (t := time.perf_counter()) < until:
            n += sum(range(50)) > 0
        return n / (t - t0)

    def beside(write: Callable[[], None]) -> float:
        done = threading.Event()

        def writer() -> None:
            while not done.is_set():
                write()

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        try:
            pace = spin(time.perf_counter() + seconds)  # the writer writes all along
        finally:
            done.set()
            thread.join()
        return pace

    ratios: dict[str, list[float]] = {name: [] for name in writers}
    for _ in range(pairs):
        for name, write in writers.items():
            alone = spin(time.perf_counter() + seconds)
            ratios[name].append(beside(write) / alone)
    return {name: statistics.median(r) for name, r in ratios.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="mnist-dcgan,cyclegan256")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if there is one)")
    ap.add_argument("--checkpoints", type=int, default=4)
    a = ap.parse_args()
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for config in a.configs.split(","):
        if config not in CONFIGS:
            sys.exit(f"checkpoint_pause: --configs {config!r} is invalid; expected "
                     f"{', '.join(CONFIGS)}")
        print(json.dumps(measure(config, device, a.checkpoints)), flush=True)


if __name__ == "__main__":
    main()
