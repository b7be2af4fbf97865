"""Which worker can run which job: the one rule the workers (claiming) and `gand show`
(explaining why a job waits) both apply, so that what show says is what the workers do.

A worker is described by its registry row (gand.store.models.Worker.to_json): its queues, the
variants its plugins provide, and the GPUs of its slot. A job asks for a queue, a variant, and
optionally a GPU (`--gpus 1`), a CPU (`--gpus 0`) or GPU memory (`--min-gpu-mem GB`).
"""
from __future__ import annotations

from typing import Any, Optional

from gand.jobs.config import JobConfig


def slot_memory_gb(worker: dict[str, Any]) -> float:
    """GPU memory one job may use on this worker: its GPU's memory times its share of it."""
    return max((g.get("memory_mb", 0) * g.get("share", 1.0) / 1024 for g in worker["gpus"]),
               default=0.0)


def why_not(worker: dict[str, Any], queue: str, variant: str,
            config: JobConfig) -> Optional[str]:
    """None if `worker` can run the job, else the reason, naming what is missing."""
    if queue not in worker["queues"]:
        return f"it does not take queue {queue!r}"
    if variant not in worker["variants"]:
        return f"plugin for variant {variant!r} is not installed or not allowed there"
    wants_gpu = config.gpus == 1 or bool(config.min_gpu_mem_gb)
    if wants_gpu and not worker["gpus"]:
        return "the job needs a GPU and it has none"
    if config.min_gpu_mem_gb and slot_memory_gb(worker) < config.min_gpu_mem_gb:
        return (f"the job needs {config.min_gpu_mem_gb:g} GB of GPU memory and its slot has "
                f"{slot_memory_gb(worker):.1f} GB")
    return None


def waiting_reason(workers: list[dict[str, Any]], queue: str, variant: str,
                   config: JobConfig) -> Optional[str]:
    """Why no live worker can run a queued job (None when one can: it is only waiting its
    turn). Names the missing plugin or resource, worker by worker when they differ."""
    live = [w for w in workers if w["state"] in ("idle", "busy")]
    if not live:
        return "no live worker (start one with `gand worker`)"
    # Workers on other queues are no reason: the job waits for one on its own queue.
    live = [w for w in live if queue in w["queues"]]
    if not live:
        return f"no live worker takes queue {queue!r} (start one with `gand worker --queues {queue}`)"
    reasons = {w["worker"]: why_not(w, queue, variant, config) for w in live}
    if any(r is None for r in reasons.values()):
        return None
    by_reason: dict[str, list[str]] = {}
    for worker, reason in sorted(reasons.items()):
        by_reason.setdefault(reason, []).append(worker)
    if len(by_reason) == 1:
        return f"no live worker can run it: {next(iter(by_reason))} ({len(live)} live)"
    return "no live worker can run it: " + "; ".join(
        f"{reason} ({', '.join(workers)})" for reason, workers in sorted(by_reason.items()))
