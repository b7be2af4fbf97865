"""Fault injection for tests and drills, and the non-finite weight check.

Not a user-facing option: environment variables, read by the worker's training loop, make a job
diverge or its worker die on purpose so that the handling can be proven (docs/reliability.md).

- GAND_FAULT_NAN_AT_STEP=N          the losses of step N are reported as NaN
- GAND_FAULT_NAN_WEIGHTS_AT_STEP=N  G's first weight becomes NaN after step N
- GAND_FAULT_KILL_IN_CHECKPOINT_AT_STEP=N  the process SIGKILLs itself half-way through writing
                                    the checkpoint file of step N (in the background writer)

The NaN faults fire at most once per job in a worker process, so a rollback that passes step N
again trains on, and one worker serves any number of fault tests in any order. The kill fires
once per run folder: the torn temp file it leaves behind is its mark, so the worker that
recovers the job writes step N whole.
"""
from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import torch

from gand.api import Models

_fired: set[tuple[str, str]] = set()
_job = ""  # the job being trained (set by the worker around its training loop)


@contextlib.contextmanager
def for_job(job_id: str) -> Iterator[None]:
    """Faults injected inside this block count as this job's."""
    global _job
    before, _job = _job, job_id
    try:
        yield
    finally:
        _job = before


def _due(var: str, step: int) -> bool:
    value = os.environ.get(var)
    if not value or (var, _job) in _fired or not value.isdigit() or int(value) != step:
        return False
    _fired.add((var, _job))
    return True


NAN_LOSSES, NAN_WEIGHTS = "GAND_FAULT_NAN_AT_STEP", "GAND_FAULT_NAN_WEIGHTS_AT_STEP"


def armed() -> bool:
    """Whether any step fault is set: read once per training loop, so that a loop without them
    does not read the environment every step (two lookups cost ring8 0.4% of a CPU step)."""
    return any(os.environ.get(v) for v in (NAN_LOSSES, NAN_WEIGHTS))


def inject(models: Models, step: int, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Applies the faults due at `step`; returns the losses to report."""
    if _due(NAN_LOSSES, step):
        losses = {k: torch.full_like(v, float("nan")) for k, v in losses.items()}
    if _due(NAN_WEIGHTS, step):
        net = next(iter(models.nets.values()))
        with torch.no_grad():
            next(net.parameters()).fill_(float("nan"))
    return losses


def non_finite_weight(models: Models) -> str | None:
    """The name of the first parameter holding a NaN or Inf, or None when all are finite."""
    for net_name, net in models.nets.items():
        for name, p in net.named_parameters():
            if not torch.isfinite(p).all():
                return f"weight {net_name}.{name}"
    return None


def non_finite_in_state(state: dict, params: dict[str, list[str]]) -> str | None:
    """As `non_finite_weight`, on a checkpoint's copy of the models (`Models.state_dict()`):
    `params` names each net's parameters (its buffers are not checked, as above)."""
    for net_name, names in params.items():
        tensors = state["nets"][net_name]
        for name in names:
            t = tensors.get(name)
            if t is not None and not torch.isfinite(t).all():
                return f"weight {net_name}.{name}"
    return None


def torn_write_due(path: Path) -> bool:
    """Whether the checkpoint written to `path` is to be torn by a SIGKILL (see the module)."""
    value = os.environ.get("GAND_FAULT_KILL_IN_CHECKPOINT_AT_STEP")
    if not value or not value.isdigit():
        return False
    prefix = f"step_{int(value):08d}"
    return path.name.startswith(prefix) and not any(path.parent.glob(f".{prefix}*.tmp"))


def die_mid_write(f: BinaryIO, parts: list) -> None:
    """Writes the first part of a checkpoint for real, then dies as a power cut would."""
    for part in parts:
        f.write(part)
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
