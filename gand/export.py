"""A job's record in other tools' formats: TensorBoard event files and JSON Lines.

It reads through the job service (one series per step, as `gand metrics` shows it) and the
files recorded in the store; tensorboardX writes the event files, so neither TensorFlow nor
torch is needed. Imported by `gand export` only when it runs.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gand.errors import NotFound
from gand.jobs.service import JobService
from gand.store import Job

SAMPLES_TAG = "samples"


@dataclass(frozen=True)
class Written:
    job_id: str
    path: Path
    scalars: int
    images: int
    skipped_images: int  # sample grids whose file is not on this machine


def run_name(job: Job) -> str:
    """The run's folder under --tensorboard DIR: the short id and the job's name, so that
    `tensorboard --logdir DIR` tells several exported jobs apart."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", job.name or "").strip("-.")[:40]
    return job.id[:12] + (f"-{slug}" if slug else "")


def eval_tags(evaluations: list[Any]) -> dict[tuple[str, str], str]:
    """`eval/KEY` for each evaluated value, `eval/METRIC/KEY` where two metrics share a key."""
    metrics_of: dict[str, set[str]] = {}
    for e in evaluations:
        metrics_of.setdefault(e.key, set()).add(e.metric)
    return {(e.metric, e.key): f"eval/{e.key}" if len(metrics_of[e.key]) == 1
            else f"eval/{e.metric}/{e.key}" for e in evaluations}


def tensorboard(service: JobService, ref: str, folder: Path) -> Written:
    """Writes the job's metrics (`train/KEY`), evaluations (`eval/KEY`) and sample grids
    (`samples`, one image per step) as TensorBoard event files in folder/run_name(job).

    Event files left there by an earlier export are replaced, so that TensorBoard does not
    show every point twice.
    """
    import numpy as np
    from PIL import Image
    from tensorboardX import SummaryWriter

    job = service.find(ref)
    store = service.store
    run_dir = folder / run_name(job)
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in run_dir.glob("events.out.tfevents.*"):
        old.unlink()
    scalars = images = skipped = 0
    writer = SummaryWriter(logdir=str(run_dir), flush_secs=3600)
    try:
        for m in store.metrics(job.id):
            writer.add_scalar(f"train/{m.key}", m.value, m.step, walltime=m.time.timestamp())
            scalars += 1
        evaluations = store.evaluations(job.id)
        tags = eval_tags(evaluations)
        for e in evaluations:
            writer.add_scalar(tags[(e.metric, e.key)], e.value, e.step,
                              walltime=e.time.timestamp())
            scalars += 1
        for a in latest_per_step(store.artifacts(job.id)):
            try:
                _, path = service.artifact_file(a.id)
            except NotFound:
                skipped += 1
                continue
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"))
            writer.add_image(SAMPLES_TAG, pixels, a.step, walltime=a.time.timestamp(),
                             dataformats="HWC")
            images += 1
    finally:
        writer.close()
    return Written(job.id, run_dir, scalars, images, skipped)


def latest_per_step(artifacts: list[Any], kind: str = "samples") -> list[Any]:
    """One artifact of `kind` per step: a resumed job may have drawn a step twice, and the
    later drawing is the one its series continues from."""
    by_step: dict[int, Any] = {}
    for a in artifacts:
        if a.kind == kind and a.step is not None:
            if a.step not in by_step or a.id > by_step[a.step].id:
                by_step[a.step] = a
    return [by_step[s] for s in sorted(by_step)]


def jsonl(service: JobService, refs: list[str], out: IO[str]) -> int:
    """Writes each job's metric rows (`"kind": "metric"`, the fields of `gand metrics --json`)
    and evaluations (`"kind": "evaluation"`) as JSON Lines; NaN and infinities become null.
    Returns the number of lines."""
    lines = 0
    for ref in refs:
        job = service.find(ref)
        for m in service.store.metrics(job.id):
            _line(out, {"kind": "metric", "job": job.id, "step": m.step, "key": m.key,
                        "value": m.value, "time": m.time.isoformat(), "epoch": m.epoch})
            lines += 1
        for e in service.store.evaluations(job.id):
            _line(out, {"kind": "evaluation", "job": job.id, "step": e.step, "metric": e.metric,
                        "key": e.key, "value": e.value, "extractor": e.extractor,
                        "num_samples": e.num_samples, "reference": e.reference,
                        "time": e.time.isoformat()})
            lines += 1
    return lines


def _line(out: IO[str], row: dict[str, Any]) -> None:
    value = row.get("value")
    if isinstance(value, float) and not math.isfinite(value):
        row["value"] = None
    out.write(json.dumps(row, allow_nan=False) + "\n")
