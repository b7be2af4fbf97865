"""The job config: one typed, versioned record, built and checked at submit, read by attribute.

It is stored as JSON in jobs.config with a `version`. A job stored before configs had a version
(the layout of gand 0.1, read as version 0) still loads: `from_dict` fills in what it lacked.
This module imports neither torch nor the plugins, so `gand list` and `gand show` stay fast.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

from gand.errors import GandError

VERSION = 1

# Every default about a job's life lives here and nowhere else: the CLI's option defaults, the
# job service, the worker and the reaper read these names.
MAX_RECOVERIES = 3        # --max-recoveries: requeues after a worker dies before the job fails
KEEP_CHECKPOINTS = 5      # --keep-checkpoints: the newest K are kept, plus the best (0: all)
ON_DIVERGE = "fail"       # --on-diverge: fail, or rollback to the last checkpoint
ON_DIVERGE_CHOICES = ("fail", "rollback")
MAX_ROLLBACKS = 3         # --on-diverge rollback: restores before the job fails
ROLLBACK_LR_FACTOR = 0.5  # each rollback halves the learning rates again
STEPS = 1000              # --steps
DEVICE = "auto"           # --device
QUEUE = "gand"            # --queue
SCHEDULE_CAP = 500        # checkpoint and sample grid every min(steps, 500) steps by default
PRIORITY = 5              # --priority: 0-9, higher first; first come, first served within one
PRIORITY_RANGE = (0, 9)
# The most steps a job may have: jobs.step and jobs.total_steps are 32-bit integers on
# PostgreSQL, so anything larger is refused at submit rather than by the database.
MAX_STEPS = 2**31 - 1

DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# A registered dataset name (`gand data add NAME SPEC`): a letter, then letters, digits, '_' or
# '-'; no '/', '.' or ':', so a name can never be mistaken for a path or a `TYPE:ARG` spec.
DATASET_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class DataConfig:
    """One resolved `--data` spec and what submit learned about it (generation needs no data)."""

    spec: str                 # what the job reads: a registered name's stored spec, resolved
    type: str                 # the dataset type plugin
    arg: Optional[str]
    info: dict[str, Any]      # DataInfo fields, as recorded at submit
    shape: tuple[int, ...]    # the shape the variant trains on
    name: Optional[str] = None  # the registered name it was given as, if any


@dataclass(frozen=True)
class EvalConfig:
    """`--eval-every` and friends: which metrics run, how often, and what marks the best."""

    every: int
    metrics: tuple[str, ...]
    num_samples: int
    best_by: Optional[dict[str, str]] = None   # {"metric", "key", "direction"}
    classifier: Optional[str] = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobConfig:
    variant: str
    loss: str
    data: tuple[DataConfig, ...]
    steps: int
    options: dict[str, Any]   # the variant's, loss's and engine's options (plugin-declared)
    seed: int
    device: str = DEVICE
    queue: str = QUEUE
    checkpoint_every: int = SCHEDULE_CAP
    sample_every: int = SCHEDULE_CAP
    eval: Optional[EvalConfig] = None
    max_recoveries: int = MAX_RECOVERIES
    keep_checkpoints: int = KEEP_CHECKPOINTS
    on_diverge: str = ON_DIVERGE
    priority: int = PRIORITY
    gpus: Optional[int] = None            # --gpus: 0 a CPU job, 1 a GPU job, None either
    min_gpu_mem_gb: Optional[float] = None  # --min-gpu-mem: a GPU (slot) with this much memory
    # What the worker resolved the `auto` fast-path options to on its device, and why
    # (gand.engine.fastpath.Runtime); None until a worker has started the job.
    runtime: Optional[dict[str, Any]] = None
    preset: Optional[str] = None          # --preset: the recipe its options started from
    version: int = VERSION

    @property
    def batch_size(self) -> int:
        return int(self.options["batch_size"])

    def with_steps(self, steps: int) -> "JobConfig":
        """The same job with another total (a resume may raise it)."""
        return replace(self, steps=steps)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for item in d["data"]:
            item["shape"] = list(item["shape"])
        d["data"] = list(d["data"])
        if d["eval"] is not None:
            d["eval"]["metrics"] = list(d["eval"]["metrics"])
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "JobConfig":
        """A stored config of any known version (no version: gand 0.1's layout)."""
        version = raw.get("version", 0)
        if not isinstance(version, int) or version > VERSION:
            raise GandError(f"job config version {version!r} is newer than this gand knows "
                            f"({VERSION}); upgrade gand")
        try:
            data = tuple(DataConfig(spec=d["spec"], type=d["type"], arg=d.get("arg"),
                                    info=dict(d["info"]), shape=tuple(d["shape"]),
                                    name=d.get("name")) for d in raw["data"])
            ev = raw.get("eval")
            evaluation = None if not ev else EvalConfig(
                every=int(ev["every"]), metrics=tuple(ev["metrics"]),
                num_samples=int(ev["num_samples"]), best_by=ev.get("best_by"),
                classifier=ev.get("classifier"), options=dict(ev.get("options") or {}))
            steps = int(raw["steps"])
            return cls(
                variant=raw["variant"], loss=raw["loss"], data=data, steps=steps,
                options=dict(raw["options"]), seed=int(raw["seed"]),
                device=raw.get("device", DEVICE), queue=raw.get("queue", QUEUE),
                checkpoint_every=int(raw.get("checkpoint_every", min(SCHEDULE_CAP, steps))),
                sample_every=int(raw.get("sample_every", min(SCHEDULE_CAP, steps))),
                eval=evaluation,
                max_recoveries=int(raw.get("max_recoveries", MAX_RECOVERIES)),
                keep_checkpoints=int(raw.get("keep_checkpoints", KEEP_CHECKPOINTS)),
                on_diverge=raw.get("on_diverge", ON_DIVERGE),
                priority=int(raw.get("priority", PRIORITY)),
                gpus=raw.get("gpus"),
                min_gpu_mem_gb=raw.get("min_gpu_mem_gb"),
                runtime=raw.get("runtime"),
                preset=raw.get("preset"),
                version=VERSION,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise GandError(f"job config (version {version}) is damaged: {type(e).__name__}: "
                            f"{e}") from None
