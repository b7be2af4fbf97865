"""Fault injection for tests and drills, and the non-finite weight check.

Not a user-facing option: two environment variables, read by the worker's training loop, make a
job diverge on purpose so that the divergence handling can be proven (docs/reliability.md).

- GAND_FAULT_NAN_AT_STEP=N          the losses of step N are reported as NaN
- GAND_FAULT_NAN_WEIGHTS_AT_STEP=N  G's first weight becomes NaN after step N

Each fires at most once per job in a worker process, so a rollback that passes step N again
trains on, and one worker serves any number of fault tests in any order.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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


def inject(models: Models, step: int, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Applies the faults due at `step`; returns the losses to report."""
    if _due("GAND_FAULT_NAN_AT_STEP", step):
        losses = {k: torch.full_like(v, float("nan")) for k, v in losses.items()}
    if _due("GAND_FAULT_NAN_WEIGHTS_AT_STEP", step):
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
