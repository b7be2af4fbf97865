"""The training loop every variant plugs into.

It knows the Variant/Loss/DataSource interfaces and nothing of Celery or SQL: the worker passes
callbacks (`Hooks`) that renew the lease, poll for cancellation and record metrics, checkpoints
and pictures in the store.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from gand import __version__
from gand.api import DataSource, Loss, Models, StepContext, Variant
from gand.engine import checkpoint as ckpt
from gand.engine import fastpath
from gand.engine.background import BackgroundWriter
from gand.engine import faults, graphs
from gand.engine import options as engine_options
from gand.engine import samples
from gand.engine.snapshot import Snapshot, StaleSnapshot
from gand.errors import UsageError
from gand.jobs.config import JobConfig
from gand.jobspec import data_infos, loss_class
from gand.plugins import Registry

SAMPLE_COUNT = 64      # images in a fixed-noise grid
FLUSH_SECONDS = 2.0    # metrics reach the store in batches at most this often


class Diverged(Exception):
    """A loss or weight became NaN or infinite."""

    def __init__(self, step: int, key: str):
        super().__init__(f"diverged at step {step} ({key} is not finite)")
        self.step = step


@dataclass
class Hooks:
    """What the loop tells the outside world, and how it hears that it must stop."""

    # Called after every step, so it must be cheap (the worker's reads a flag its lease
    # keeper sets); returns a reason to stop ("cancel", "shutdown", "lease-lost") or None.
    tick: Callable[[int], Optional[str]] = lambda step: None
    # A batch of (step, key, value) rows and the step reached.
    report: Callable[[list[tuple[int, str, float]], int], None] = lambda rows, step: None
    # The training state at a step, to write and record (the worker names the file after its
    # lease's epoch and writes it only while the lease holds). Called in a background thread
    # with a host copy whose buffers the next checkpoint refills: a hook that keeps the whole
    # state is noticed (the next copy is allocated anew), one that keeps a part must copy it.
    # It is to write through checkpoint.save, which puts the file in place only once the
    # snapshot is known to be sound (gand.engine.snapshot); a checkpoint it wrote otherwise
    # could be one that the loop then reports as not written.
    checkpoint: Callable[[int, dict[str, Any]], None] = lambda step, state: None
    artifact: Callable[[str, Path, int], None] = lambda kind, path, step: None
    # Called with the step after that step's checkpoint, every `eval.every` steps and at the end.
    evaluate: Callable[[int], None] = lambda step: None
    # Added to the names of files the loop writes (sample grids), e.g. the lease's epoch "e3".
    tag: str = ""
    # Something the job's owner should read in `gand show` (e.g. a CUDA graph that could not be
    # captured, so the job trains eagerly).
    note: Callable[[str], None] = lambda text: None


@dataclass
class Outcome:
    reason: str  # "completed" or the reason tick() gave
    step: int


def _scalar(value: torch.Tensor) -> torch.Tensor:
    value = value.float()
    return value if value.dim() == 0 else value.reshape(())


def pick_device(spec: str) -> torch.device:
    """The torch device `spec` names (auto, cpu, cuda, cuda:N); a UsageError for anything else
    or for a GPU this machine does not have."""
    from gand.jobs.config import DEVICE_RE

    if not DEVICE_RE.match(spec):
        raise UsageError(f"--device {spec!r} is invalid; expected auto, cpu, cuda or cuda:N")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {spec} requested but this worker has no CUDA GPU")
        if (dev.index or 0) >= torch.cuda.device_count():
            raise UsageError(f"device {spec} requested but this worker has "
                             f"{torch.cuda.device_count()} GPU(s)")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Run:
    """A job's config turned into live objects on a device."""

    config: JobConfig
    variant: Variant
    loss: Loss
    models: Models
    device: torch.device
    data: list[DataSource] = field(default_factory=list)
    runtime: Optional[fastpath.Runtime] = None
    # Whether a checkpoint copies the optimizers' tensors after the pause (gand.engine.snapshot);
    # off for good once a plugin was seen changing them outside an optimizer step.
    defer_copy: bool = True
    # The variant's step, or its CUDA graph (made on the first step, and again after a restore:
    # loading replaces the optimizers' state tensors that a captured graph would write).
    _step: Optional[Callable[[StepContext], dict[str, torch.Tensor]]] = None

    @classmethod
    def build(cls, config: JobConfig | dict[str, Any], registry: Registry,
              device: Optional[str] = None, load_data: bool = True) -> "Run":
        if isinstance(config, dict):  # as stored in a checkpoint or a job row
            config = JobConfig.from_dict(config)
        dev = pick_device(device or config.device)
        variant = registry.variant(config.variant)
        loss = loss_class(registry, config.loss)(config.options)
        infos = data_infos(config)
        seed_everything(config.seed)
        models = variant.build(infos, config.options, dev)
        data = []
        if load_data:
            for d, info in zip(config.data, infos):
                dtype = registry.dataset_type(d.type)
                data.append(dtype.load(d.arg, info, tuple(d.shape), dev))
        # The fast paths for this device, resolved now that the networks exist (the worker
        # records the choice in the job's config).
        runtime = fastpath.choose(config.options, dev, models, loss, data)
        data = fastpath.apply(runtime, models, data)
        return cls(config, variant, loss, models, dev, data, runtime)

    def context(self, step: int) -> StepContext:
        opts = self.config.options
        return StepContext(step=step, total_steps=self.config.steps, batch_size=opts["batch_size"],
                           device=self.device, options=opts, data=self.data,
                           precision=self.runtime.precision if self.runtime else "fp32",
                           graphed=self.graphed)

    @property
    def graphed(self) -> bool:
        """Whether the step runs as a CUDA graph (`--set cuda_graph=true`)."""
        return bool(self.runtime and self.runtime.cuda_graph)

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        """One training step (one generator update with its discriminator updates)."""
        if self._step is None:
            self._step = graphs.step_function(self.variant, self.models, self.loss, self.graphed)
        return self._step(self.context(step))

    @property
    def graph_failure(self) -> Optional[str]:
        """Why a requested CUDA graph could not be captured (the step then runs eagerly)."""
        return getattr(self._step, "failed", None)

    # -- checkpoint state -------------------------------------------------------------------

    def state(self, step: int) -> dict[str, Any]:
        return {"format": ckpt.FORMAT, "gand_version": __version__, "step": step,
                "config": json.dumps(self.config.to_dict()), "models": self.models.state_dict(),
                "loss": self.loss.state_dict(),
                "rng": ckpt.capture_rng()}

    def restore(self, state: dict[str, Any]) -> int:
        """Loads a checkpoint's models and RNG; returns the step it was taken at."""
        self.models.load_state_dict(state["models"])
        self.loss.load_state_dict(state.get("loss") or {})  # absent in gand 0.1's checkpoints
        if self.runtime is not None:
            fastpath.set_optimizer_impl(self.runtime, self.models)
        self._step = None
        ckpt.restore_rng(state["rng"])
        return int(state["step"])

    def fixed_samples(self, n: int = SAMPLE_COUNT) -> torch.Tensor:
        # The same noise every time (seeded from the job), so grids over time are comparable.
        g = torch.Generator(device=self.device).manual_seed(self.config.seed)
        return self.variant.preview(self.models, self.data, g, n)


def train(run: Run, run_dir: Path, hooks: Hooks, start_step: int = 0) -> Outcome:
    """Trains from `start_step` to the configured total, checkpointing and reporting as it goes.

    Checkpoints and sample grids are written in the background (gand.engine.background): when
    this returns, the last of each is written and recorded, or its error has been raised.
    """
    params = {n: [k for k, _ in net.named_parameters()] for n, net in run.models.nets.items()}

    def write(step: int, snap: Snapshot) -> None:
        try:
            state = snap.complete()
            # Never save poisoned weights: a rollback or resume must find a healthy
            # checkpoint. Checked here, on the host copy, so that the check adds nothing to the
            # loop's pause; Diverged reaches the loop as any failed write does, naming the
            # checkpoint's step.
            bad = faults.non_finite_in_state(state["models"], params)
            if bad:
                snap.verdict()
                raise Diverged(step, bad)
            # Serialised and written now; put in place (and recorded) once the loop has
            # released the snapshot, at its next optimizer step.
            with ckpt.commit_gate(snap.verdict):
                hooks.checkpoint(step, state)
            snap.verdict()  # for a hook that keeps the state some other way
        except StaleSnapshot as e:
            run.defer_copy = False
            hooks.note(f"checkpoint at step {step} not written: {e}; later checkpoints copy "
                       f"all of the state during the pause")
        finally:
            # The pause at the checkpoint, and the wait (if any) of the optimizer step that
            # needed the rest of the copy.
            writer.note(step, "ckpt_pause_ms", snap.pause_ms + snap.waited_ms)

    def render(step: int, draw: Callable[[], Path]) -> None:
        hooks.artifact("samples", draw(), step)

    writer = BackgroundWriter(write, "gand-checkpoint-writer", "ckpt_write_ms")
    grids = BackgroundWriter(render, "gand-sample-writer", "samples_write_ms")
    try:
        outcome = _loop(run, run_dir, hooks, start_step, writer, grids)
    except BaseException:
        writer.drain()  # no thread left writing for a job that ended; the first error wins
        grids.drain()
        raise
    finally:
        writer.close()
        grids.close()
    if outcome.reason == "lease-lost":
        writer.drain()  # its fenced write is refused anyway: someone else owns the job
        grids.drain()
    return outcome


def _loop(run: Run, run_dir: Path, hooks: Hooks, start_step: int,
          writer: BackgroundWriter, grids: BackgroundWriter) -> Outcome:
    cfg = run.config
    total, bs = cfg.steps, cfg.batch_size
    ckpt_every, sample_every = cfg.checkpoint_every, cfg.sample_every
    eval_every = cfg.eval.every if cfg.eval else 0
    pending: list[tuple[int, dict[str, torch.Tensor]]] = []
    last_flush = time.monotonic()
    flushed_step = start_step
    step = start_step
    graph_noted = False
    faulty = faults.armed()  # tests and drills only
    run.models.train()

    def flush() -> None:
        # One device→host transfer and one store transaction for all steps since the last flush.
        nonlocal last_flush, flushed_step
        now = time.monotonic()
        rows: list[tuple[int, str, float]] = []
        if pending:
            keys = [(s, k) for s, m in pending for k in m]
            # (Metrics are scalars; reshape only what is not one: a reshape a value cost ring8's
            # loop about 0.4% of its step.)
            values = torch.stack([_scalar(m[k]) for s, m in pending for k in m]).tolist()
            for (s, k), v in zip(keys, values):
                if not math.isfinite(v):
                    raise Diverged(s, k)
                rows.append((s, k, v))
            if flushed_step > start_step:  # the first step's flush would time start-up, not pace
                rows.append((step, "img_per_s",
                             (step - flushed_step) * bs / max(now - last_flush, 1e-9)))
        rows.extend(writer.take_rows())
        rows.extend(grids.take_rows())
        pending.clear()
        last_flush, flushed_step = now, step
        hooks.report(rows, step)

    host: list[Any] = [None]  # the previous checkpoint's host copy, refilled by the next one

    def save_checkpoint() -> None:
        # The loop pauses only for the previous write (if still running) and the copy to host
        # memory of what is not the optimizers' (gand.engine.snapshot); their tensors are
        # copied beside the next step, and serialising, hashing, writing and recording happen
        # in the background.
        t0 = time.perf_counter()
        writer.wait()  # never two in flight; a failed write is raised here
        # Once written, the previous copy is refilled rather than allocated anew — unless a
        # hook kept it (then this list and getrefcount's argument are not its only holders).
        reuse = host[0] if sys.getrefcount(host[0]) == 2 else None
        snap = Snapshot(run.state(step), list(run.models.optimizers.values()), into=reuse,
                        defer=run.defer_copy and not run.graphed)  # a graph's steps run no hooks
        del reuse
        host[0] = snap.host
        snap.pause_ms = (time.perf_counter() - t0) * 1000
        writer.start(step, snap, settle=snap.release)

    def last_checkpoint() -> None:
        # The job's final status is written only once its last checkpoint (and sample grid) is
        # on disk and in the store, and with the timings of that checkpoint.
        flush()
        save_checkpoint()
        writer.wait()
        grids.wait()
        flush()

    def save_samples() -> None:
        # The samples are drawn here, from the live generator; drawing the plot or grid, its PNG
        # and its store row happen in the background (a ring8 scatter plot takes about 70 ms
        # on a CPU: 20 steps of ring8).
        t0 = time.perf_counter()
        path = run_dir / "samples" / f"step_{step:08d}{'-' + hooks.tag if hooks.tag else ''}.png"
        if run.data and run.data[0].info.kind == "vector":
            extra = run.data[0].info.extra
            draw = partial(samples.save_vector_plot, run.fixed_samples(1000).detach().cpu(),
                           run.data[0].sample(1000).x.detach().cpu(), path, f"step {step}",
                           modes=extra.get("modes"), std=extra.get("std"))
        else:
            draw = partial(samples.save_grid, run.fixed_samples().detach().cpu(), path)
        grids.start(step, draw)  # waits for the previous grid, if still being drawn
        grids.note(step, "samples_pause_ms", (time.perf_counter() - t0) * 1000)

    while step < total:
        step += 1
        # 1. One generator update with its discriminator updates (the variant's step), at this
        #    step's learning rates when `--set lr_decay` asks for a decay at the end.
        engine_options.decay_learning_rates(run.models.optimizers.values(), cfg.options, step,
                                            total)
        losses = run.train_step(step)
        if not graph_noted and run.graph_failure:
            graph_noted = True
            hooks.note(run.graph_failure)
        pending.append((step, faults.inject(run.models, step, losses) if faulty else losses))
        now = time.monotonic()
        # 2. Report metrics in batches; a non-finite loss surfaces here as Diverged. The first
        #    step is reported at once: the store then says when training really began.
        #    (The last step is reported with the last checkpoint, below.)
        if now - last_flush >= FLUSH_SECONDS or step == start_step + 1:
            flush()
        # 3. Checkpoint and sample grid on their schedules, and always at the end. An evaluated
        #    step is checkpointed too, so that --best-by can point `generate` at it.
        eval_now = bool(eval_every) and (step == total or step % eval_every == 0)
        if step == total:
            last_checkpoint()
        elif (ckpt_every and step % ckpt_every == 0) or eval_now:
            flush()
            save_checkpoint()
        if eval_now:
            writer.wait()  # the evaluation marks the best checkpoint: its row must exist
            grids.wait()  # and draws its own plots: never two matplotlib figures at once
            hooks.evaluate(step)
        if step == total or (sample_every and step % sample_every == 0):
            save_samples()
        # 4. Stop requests (cancel, shutdown) and a lost lease, read from a flag each step; a
        #    background write that failed (full disk, lost lease) stops the loop here too.
        writer.check()
        reason = hooks.tick(step) if step < total else None
        if reason == "lease-lost":
            return Outcome(reason, step)  # someone else owns the job now: write nothing more
        if reason:
            last_checkpoint()
            return Outcome(reason, step)
    if step > start_step:
        grids.wait()  # the last grid, drawn after the last checkpoint, is recorded with its timing
        flush()
    return Outcome("completed", step)
