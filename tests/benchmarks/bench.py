#!/usr/bin/env python3
"""gand's speed benchmark: its training step side by side with the lecture's loops, plus the
latency from submit to the first step and the step loop's pause per checkpoint.

    python tests/benchmarks/bench.py [--device cpu|cuda] [--pairs 5] [--window 2]
                                     [--configs ring8-gan,mnist-dcgan,...] [--out FILE]

Honest on a noisy shared machine: the reference loop (../shared/bench/reference_loops.py, the
lecture's models and steps as a user runs them) and gand's own loop (`train()` with its batched
metric flush, on the same model, batch, data path and device) are built once in this process and
timed in alternating windows, `--pairs` times, reference first in even pairs and gand first in
odd ones. Each pair gives a ratio; the table reports the median ratio and its spread (min..max),
so a burst of load on the machine moves one pair, not the verdict.

Few steps are spent outside the pairs, so that the slow CPU configs (seconds a step) fit in
minutes: each side runs one untimed warm-up step, then one timed step that sizes its windows; a
loop whose step fills a window keeps one-step windows, a faster one is probed once more. gand's
side is one `train()` per comparison, paused inside its per-step hook while the reference runs
(GandLoop), so its windows time its loop as it runs, metric flushes included, and no end-of-run
checkpoint or sample grid falls inside a window.

gand runs with its automatic fast paths (gand/engine/fastpath.py: precision, channels_last,
compile, fused optimizers), and on a GPU also with the alternative choice, so that every
automatic choice is backed by a figure in the same table. Where gand picks bf16 the reference is
also timed in bf16 (the same precision), and mnist-dcgan is also timed as the lecture writes it
(a PIL DataLoader).

Prints one JSON line per row and a final JSON object with everything; it is a benchmark, not a
test: timings are reported, never asserted. Quote the machine with the figures.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from argparse import Namespace
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Generator, Optional, TypeVar

import torch

ROOT = Path(__file__).resolve().parents[2]
# GAND_REFERENCE_LOOPS: where a copy travels to a machine without ../shared (a GPU machine).
REFERENCE = Path(os.environ.get("GAND_REFERENCE_LOOPS",
                                ROOT.parent / "shared" / "bench" / "reference_loops.py"))
MNIST = ROOT / "tests" / "data" / "mnist"  # gand's own copy; only the reference loops are shared
T = TypeVar("T")


@dataclass(frozen=True)
class Config:
    name: str          # reference_loops.py's config
    batch: int
    variant: str       # gand's variant
    loss: Optional[str]
    sets: tuple[str, ...] = ()   # gand options that make its model the reference's


# The reference's models: its ring8 MLP has nz=2 and 128 units, and none of the tricks of gand's
# ring8 recipe (a mixture of generators, packing, an EMA of G: work the reference does not do);
# its DCGAN is gand's dcgan; its CycleGAN zero-pads the residual blocks (CycleGAN reflects: 108
# more padding operations a step) and strides the PatchGAN's fourth convolution (94 px
# patches: 3.3 GFLOP a 256 px image against 6.3 for CycleGAN's 70 px ones).
LECTURE_CYCLEGAN = ("res_padding=zeros", "patch=94")
CONFIGS = {
    "ring8-gan": Config("ring8-gan", 256, "gan", "bce", ("nz=2", "hidden=128", "layers=2",
                                                         "components=0", "pack=1", "ema=0")),
    "mnist-dcgan": Config("mnist-dcgan", 64, "dcgan", "bce"),
    "dcgan64": Config("dcgan64", 128, "dcgan", "bce"),
    "dcgan64-b1024": Config("dcgan64", 1024, "dcgan", "bce"),
    "dcgan64-wgangp": Config("dcgan64-wgangp", 64, "wgan-gp", None),
    "cyclegan256": Config("cyclegan256", 1, "cyclegan", None, LECTURE_CYCLEGAN),
    "cyclegan256-b8": Config("cyclegan256", 8, "cyclegan", None, LECTURE_CYCLEGAN),
}
# CycleGAN 256 takes 4-110 s a step on a 2-core CPU (machines differ): a GPU config only.
CPU_CONFIGS = "ring8-gan,mnist-dcgan,dcgan64,dcgan64-wgangp"
GPU_CONFIGS = ",".join(CONFIGS)


def sync_for(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


# -- the reference loop, built in this process -------------------------------------------------

def load_reference():
    if not REFERENCE.exists():
        raise SystemExit(f"the reference loops are not here: {REFERENCE} (this benchmark compares "
                         f"with ../shared/bench/reference_loops.py)")
    spec = importlib.util.spec_from_file_location("reference_loops", REFERENCE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reference_step(ref, cfg: Config, device: torch.device, precision: str, data: str):
    """The reference's step closure, set up exactly as its main() does."""
    args = Namespace(config=cfg.name, batch_size=cfg.batch, precision=precision, data=data,
                     mnist=str(MNIST), device=str(device), seed=0)
    torch.manual_seed(0)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    if cfg.name == "cyclegan256":
        models = [m.to(device) for m in (ref.cyclegan_G(), ref.cyclegan_G(), ref.patch_D(), ref.patch_D())]
        gopt = torch.optim.Adam(list(models[0].parameters()) + list(models[1].parameters()), 2e-4, betas=(0.5, 0.999))
        dopt = torch.optim.Adam(list(models[2].parameters()) + list(models[3].parameters()), 2e-4, betas=(0.5, 0.999))
        x = torch.rand(cfg.batch, 3, 256, 256, device=device) * 2 - 1
        y = torch.rand(cfg.batch, 3, 256, 256, device=device) * 2 - 1
        return lambda: ref.cyclegan_step(models, gopt, dopt, x, y, autocast)
    G, D, nz, shape = ref.build(args, device)
    G, D = G.to(device), D.to(device)
    gopt = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    dopt = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    batches = ref.batches(args, shape, device)
    return lambda: ref.gan_step(args, G, D, gopt, dopt, nz, batches, device, autocast)


class ReferenceLoop:
    def __init__(self, ref, cfg: Config, device: torch.device, precision: str, data: str = "tensor"):
        self.step = reference_step(ref, cfg, device, precision, data)
        self.sync = sync_for(device)
        self.pil = data == "pil"
        self.label = f"reference {precision}" + (" (PIL DataLoader)" if self.pil else "")
        self.warm = False  # its warm-up step is run once, by its first comparison

    def window(self, k: int) -> float:
        """Seconds per step over k steps."""
        self.sync()
        t = time.perf_counter()
        for _ in range(k):
            self.step()
        self.sync()
        return (time.perf_counter() - t) / k


# -- gand's loop -------------------------------------------------------------------------------

def rgb_folder(tmp: Path, size: int, n: int, name: str) -> str:
    """A folder of random RGB PNGs: the reference's random tensor pool, as files gand loads."""
    import numpy as np
    from PIL import Image

    folder = tmp / f"rgb{size}{name}"
    if not folder.exists():
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return str(folder)


def data_spec(cfg: Config, tmp: Path) -> str:
    if cfg.name == "ring8-gan":
        return "ring8"
    if cfg.name == "mnist-dcgan":
        return f"mnist:{MNIST}"
    if cfg.name == "cyclegan256":
        return f"{rgb_folder(tmp, 256, 8, 'a')},{rgb_folder(tmp, 256, 8, 'b')}"
    return rgb_folder(tmp, 64, max(cfg.batch * 4, 1024) if cfg.batch > 256 else 256, "a")


class GandLoop:
    """gand's loop as a job runs it: `train()` with its batched metric flush and its per-step
    checks, for as long as a whole comparison lasts.

    `drive(schedule)` runs ONE train() per comparison, with a total of steps it never reaches,
    in the calling thread. The schedule (a generator, see `pairs`) runs the reference's windows
    itself and yields how many steps it wants of gand; train()'s `tick` hook, called after
    every step, counts them, syncs the device at the last one and sends the seconds per step
    back, and the schedule runs on inside that tick until it wants gand again. When the
    schedule is done, tick answers "cancel" and train() stops as a cancelled job does (its
    final checkpoint copy, off the clock). So no end-of-run checkpoint or sample grid falls in a
    window, and no second thread runs torch: with gand's loop in a thread of its own (a second
    OpenMP pool), ring8-gan's steps took 3.9 ms instead of 1.6 ms on both threads of this
    2-core machine, at 2 torch threads.
    """

    def __init__(self, cfg: Config, device: torch.device, tmp: Path, fast: tuple[str, ...] = ()):
        from gand import plugins
        from gand.engine.graphs import WARMUP_STEPS
        from gand.engine.trainer import Run
        from gand.jobs.config import MAX_STEPS
        from gand.jobspec import build_config

        reg = plugins.load()
        config = build_config(reg, variant=cfg.variant, loss=cfg.loss, data=data_spec(cfg, tmp),
                              steps=MAX_STEPS, batch_size=cfg.batch,
                              sets=list(cfg.sets) + list(fast), seed=0, device=str(device),
                              checkpoint_every=0, sample_every=0)
        self.run = Run.build(config, reg)
        self.sync = sync_for(device)
        self.dir = tmp / f"run-{cfg.name}-{cfg.batch}-{'-'.join(fast) or 'auto'}"
        self.step = 0
        rt = self.run.runtime
        # A CUDA graph's first steps run eagerly, then one captures it (gand.engine.graphs).
        self.warmup_steps = WARMUP_STEPS + 1 if rt.cuda_graph else 1
        self.label = (f"gand {'auto' if not fast else ' '.join(fast)}: {rt.precision}"
                      f"{' channels_last' if rt.channels_last else ''}"
                      f"{' compile' if rt.compile else ''}{' cuda_graph' if rt.cuda_graph else ''}"
                      f" optim={rt.optim_impl}")

    def drive(self, schedule: Generator[int, float, T]) -> T:
        """Runs train() while `schedule` wants gand's steps; returns what the schedule returns.

        Each window is timed from tick's return (the order to go on) to the tick after its
        k-th step; the first one also holds train()'s start."""
        from gand.engine.trainer import Hooks, train

        left, k, t0, done = 0, 0, 0.0, []

        def start(n: int) -> None:
            nonlocal left, k, t0
            if n < 1:
                raise ValueError(f"a window needs at least one step, not {n}")
            self.sync()
            left, k, t0 = n, n, time.perf_counter()

        def tick(step: int) -> Optional[str]:
            nonlocal left
            left -= 1
            if left > 0:
                return None
            self.sync()
            per = (time.perf_counter() - t0) / k
            try:
                start(schedule.send(per))
            except StopIteration as end:
                done.append(end.value)
                return "cancel"
            return None

        try:
            start(next(schedule))
            outcome = train(self.run, self.dir, Hooks(tick=tick), start_step=self.step)
        finally:
            schedule.close()  # a no-op when it finished; else its reference stops there too
        self.step = outcome.step
        if not done:
            raise RuntimeError(f"gand's train() ended ({outcome.reason}) before the comparison")
        return done[0]


# -- pairs -------------------------------------------------------------------------------------

def window(loop, k: int) -> Generator[int, float, float]:
    """Seconds per step over k steps of `loop`, inside a schedule: the reference's windows run
    here; gand's are yielded to GandLoop.drive, which sends back their time."""
    if isinstance(loop, GandLoop):
        return (yield k)
    return loop.window(k)


def steps_for(loop, window_s: float, one: float) -> Generator[int, float, int]:
    """Steps that take about window_s, given one warm step's time.

    A loop whose one step already fills a window runs one step a window: the slow configs of a
    CPU (seconds a step) are timed in single steps and probed no further. A faster one is
    probed once more, over about a quarter of a window, for a steadier estimate."""
    if one >= window_s:
        return 1
    per = yield from window(loop, max(1, min(100_000, int(0.25 * window_s / max(one, 1e-6)))))
    return max(1, min(100_000, int(window_s / max(per, 1e-6))))


def pair_schedule(a, b, window_s: float, n: int) -> Generator[int, float, dict]:
    """n alternating timing windows of loops a and b, a first in even pairs and b first in odd
    ones; b's speed over a's per pair."""
    for loop in (a, b):
        # One untimed step: first-use costs (allocations, kernel choice, compilation) and, for
        # gand, train()'s start stay out of every figure.
        if isinstance(loop, GandLoop) or not loop.warm:
            yield from window(loop, getattr(loop, "warmup_steps", 1))
            loop.warm = True
    # One timed step each, to size the windows. Not a pair: a reference's second step can
    # still be ~20% slower than its later ones (dcgan64 here), which would favour gand.
    one_a = yield from window(a, 1)
    one_b = yield from window(b, 1)
    ka = yield from steps_for(a, window_s, one_a)
    kb = yield from steps_for(b, window_s, one_b)
    ta, tb = [], []
    for i in range(n):
        order = ((a, ka, ta), (b, kb, tb)) if i % 2 == 0 else ((b, kb, tb), (a, ka, ta))
        for loop, k, out in order:
            out.append((yield from window(loop, k)))
    ratios = sorted(x / y for x, y in zip(ta, tb))
    return {"ratio_median": round(statistics.median(ratios), 3),
            "ratio_min": round(ratios[0], 3), "ratio_max": round(ratios[-1], 3),
            "a_step_ms": round(1000 * statistics.median(ta), 3),
            "b_step_ms": round(1000 * statistics.median(tb), 3),
            "a_steps": ka, "b_steps": kb}


def pairs(reference: ReferenceLoop, gand: GandLoop, window_s: float, n: int) -> dict:
    """The comparison of one reference loop with one of gand's, in one train() of gand's."""
    return gand.drive(pair_schedule(reference, gand, window_s, n))


def compare(ref_mod, name: str, device: torch.device, tmp: Path, window_s: float, n: int,
            alternatives: bool) -> list[dict]:
    cfg = CONFIGS[name]
    rows = []
    gand_auto = GandLoop(cfg, device, tmp)
    rt = gand_auto.run.runtime
    gands = [gand_auto]
    graphed = None
    if alternatives and device.type == "cuda":
        # The other side of each automatic choice, so the table shows it was the faster one.
        if rt.precision == "bf16":
            gands.append(GandLoop(cfg, device, tmp, ("precision=fp32", "channels_last=false",
                                                     "compile=false")))
            if rt.compile:
                gands.append(GandLoop(cfg, device, tmp, ("compile=false",)))
            # bf16's layout too: on a CPU, channels_last cost CycleGAN's InstanceNorms 17%.
            gands.append(GandLoop(cfg, device, tmp, (f"channels_last={not rt.channels_last}"
                                                     .lower(),)))
        elif cfg.variant != "gan":
            gands.append(GandLoop(cfg, device, tmp, ("precision=bf16", "channels_last=true")))
        gands.append(GandLoop(cfg, device, tmp, ("optim_impl=default",)))
        graphed = graph_loop(cfg, device, tmp)
        if graphed is not None:
            gands.append(graphed)
    elif alternatives and rt.precision == "bf16":
        # A CPU with bf16 instructions (gand.engine.fastpath): the fp32 side of that choice.
        gands.append(GandLoop(cfg, device, tmp, ("precision=fp32", "channels_last=false")))
    references = [ReferenceLoop(ref_mod, cfg, device, "fp32")]
    if rt.precision == "bf16":
        references.append(ReferenceLoop(ref_mod, cfg, device, "bf16"))
    if name == "mnist-dcgan":
        references.append(ReferenceLoop(ref_mod, cfg, device, "fp32", data="pil"))
    for r in references:
        for g in gands:
            if g is not gand_auto and r is not references[0] and not (g is graphed and r.pil):
                # Alternatives are compared with the fp32 reference only; a CUDA graph also
                # with the lecture's PIL loader (the 5x goal for mnist-dcgan).
                continue
            t0 = time.monotonic()
            p = pairs(r, g, window_s, n)
            row = {"config": name, "batch": cfg.batch, "reference": r.label, "gand": g.label,
                   "speedup": p["ratio_median"], "spread": [p["ratio_min"], p["ratio_max"]],
                   "reference_img_per_s": round(cfg.batch / (p["a_step_ms"] / 1000), 1),
                   "gand_img_per_s": round(cfg.batch / (p["b_step_ms"] / 1000), 1),
                   "reference_step_ms": p["a_step_ms"], "gand_step_ms": p["b_step_ms"],
                   "steps_per_window": [p["a_steps"], p["b_steps"]],
                   "pairs": n, "seconds": round(time.monotonic() - t0, 1)}
            if g is gand_auto:
                row["runtime"] = rt.to_dict()
            if g.run.graph_failure:  # the job trained eagerly: the row is not a graph's figure
                row["graph_failure"] = g.run.graph_failure
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def graph_loop(cfg: Config, device: torch.device, tmp: Path) -> Optional["GandLoop"]:
    """gand with `cuda_graph=true`, where submit accepts it for this config (None elsewhere).
    The ring8 recipe's lr_decay, which a graph cannot follow, is turned off: it would start
    only in the second half of a run, never reached in a benchmark window."""
    from gand.errors import UsageError

    sets = ("cuda_graph=true",) + (("lr_decay=0",) if cfg.variant == "gan" else ())
    try:
        return GandLoop(cfg, device, tmp, sets)
    except UsageError:
        return None


def optional(module: str, *args, **kwargs) -> dict:
    """The latency and checkpoint-pause measurements live in their own modules."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        return {"available": False, "why": str(e)}
    try:
        return mod.measure(*args, **kwargs)
    except Exception as e:  # a benchmark reports what broke rather than losing the table
        return {"available": True, "error": f"{type(e).__name__}: {e}"}


def machine(device: torch.device) -> dict:
    return {"machine": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--configs", default=None,
                    help=f"default: {CPU_CONFIGS} on CPU, all on GPU; none: latency and pause only")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--window", type=float, default=None, help="seconds per timing window")
    ap.add_argument("--no-alternatives", action="store_true")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--no-pause", action="store_true", help="skip the checkpoint-pause measure")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    args = ap.parse_args()
    device = torch.device(args.device)
    default = GPU_CONFIGS if device.type == "cuda" else CPU_CONFIGS
    names = [] if args.configs == "none" else (args.configs or default).split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config {unknown[0]!r}; known: {', '.join(CONFIGS)}")
    window = args.window or (1.0 if device.type == "cuda" else 2.0)
    report = {"machine": machine(device), "pairs": args.pairs, "window_s": window, "loops": []}
    print(json.dumps(report["machine"]), flush=True)
    sys.path.insert(0, str(Path(__file__).parent))
    started = time.monotonic()

    def save() -> None:
        # After every config too: a run cut short by a device lease's time limit keeps its rows.
        report["seconds"] = round(time.monotonic() - started, 1)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))

    ref_mod = load_reference()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            report["loops"] += compare(ref_mod, name, device, Path(tmp), window, args.pairs,
                                       not args.no_alternatives)
            save()
    if not args.no_latency:
        for broker in ("filesystem", "redis"):
            report[f"latency_{broker}"] = optional("latency", broker, jobs=20)
            print(json.dumps({f"latency_{broker}": report[f"latency_{broker}"]}), flush=True)
            save()
    # CycleGAN 256, whose checkpoint carries its two 50-image pools, is the case; on a
    # 2-core CPU its steps take 10-30 s, so there it runs with 3 checkpoints (2-3 minutes)
    # and mnist-dcgan shows checkpoints between quick steps.
    pauses = [("cyclegan256", 5)] if device.type == "cuda" else [("mnist-dcgan", 5),
                                                                  ("cyclegan256", 3)]
    if not args.no_pause:
        report["checkpoint_pause"] = [optional("checkpoint_pause", config, str(device), n)
                                      for config, n in pauses]
        print(json.dumps({"checkpoint_pause": report["checkpoint_pause"]}), flush=True)
    save()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
