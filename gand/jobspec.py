"""A job's configuration: built and checked at submit time, stored as JSON, read by workers.

Everything a user can get wrong is found here, before anything is written or queued: unknown
variant, loss or dataset, a missing path, a malformed `--set`, out-of-range numbers.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Optional

from gand.api import DataInfo, Loss, Variant
from gand.engine import options as engine_options
from gand.errors import UsageError, one_of
from gand.plugins import Registry

DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FOLDER = "folder"  # the dataset type that receives plain paths


@dataclass(frozen=True)
class ResolvedData:
    spec: str
    type_name: str
    arg: Optional[str]
    info: DataInfo


def resolve_data(registry: Registry, spec: str) -> ResolvedData:
    """Turns one `--data` spec (`ring8`, `mnist:DIR`, a folder path) into its DataInfo."""
    spec = spec.strip()
    if not spec:
        raise UsageError("--data has an empty dataset spec; expected NAME, NAME:ARG or a path")
    name, sep, arg = spec.partition(":")
    if name in registry.datasets:
        dtype = registry.dataset_type(name)
        arg_or_none = arg if sep else None
        if dtype.needs_arg and not arg_or_none:
            raise UsageError(f"dataset {name} needs an argument: --data {name}:ARG")
    elif ("/" in spec or spec.startswith(".")) and FOLDER in registry.datasets:
        dtype, arg_or_none = registry.dataset_type(FOLDER), spec
    else:
        raise UsageError(f"unknown dataset {spec!r}; installed: {one_of(registry.datasets)}, "
                         f"or a folder path")
    info = dtype.describe(arg_or_none)
    return ResolvedData(spec, dtype.name, arg_or_none, info)


def parse_sets(items: list[str]) -> dict[str, str]:
    """`--set key=value` items into a dict; a malformed item is a UsageError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UsageError(f"--set {item!r} is malformed; expected key=value, e.g. --set d_steps=5")
        if key in out:
            raise UsageError(f"--set {key} is given twice")
        out[key] = value
    return out


def _positive(flag: str, value: Optional[int], allow_zero: bool = False) -> None:
    if value is None:
        return
    low = 0 if allow_zero else 1
    if value < low:
        raise UsageError(f"{flag} {value} is invalid; expected an integer ≥ {low}")


def build_config(registry: Registry, *, variant: str, data: str, loss: Optional[str] = None,
                 steps: int = 1000, batch_size: Optional[int] = None, lr: Optional[float] = None,
                 sets: Optional[list[str]] = None, seed: Optional[int] = None,
                 device: str = "auto", queue: str = "gand", checkpoint_every: Optional[int] = None,
                 sample_every: Optional[int] = None) -> dict[str, Any]:
    """Checks every submit option and returns the job config that workers will run."""
    v: Variant = registry.variant(variant)
    loss_name = loss or v.default_loss
    loss_cls: type[Loss] = registry.loss_class(loss_name)
    if loss_cls.output not in v.outputs:
        raise UsageError(f"loss {loss_name} needs a discriminator that outputs {loss_cls.output}; "
                         f"variant {variant} outputs {one_of(v.outputs)}")
    _positive("--steps", steps)
    _positive("--batch-size", batch_size)
    _positive("--checkpoint-every", checkpoint_every, allow_zero=True)
    _positive("--sample-every", sample_every, allow_zero=True)
    if seed is not None and not 0 <= seed < 2**63:
        raise UsageError(f"--seed {seed} is invalid; expected 0 ≤ seed < 2^63")
    if lr is not None and not lr > 0:
        raise UsageError(f"--lr {lr} is invalid; expected a positive number")
    if not DEVICE_RE.match(device):
        raise UsageError(f"--device {device!r} is invalid; expected auto, cpu, cuda or cuda:N")
    if not QUEUE_RE.match(queue):
        raise UsageError(f"--queue {queue!r} is invalid; expected letters, digits, '_', '.', '-'")

    given: dict[str, Any] = parse_sets(sets or [])
    for key, value in (("batch_size", batch_size), ("lr", lr)):
        if value is not None:
            if key in given:
                raise UsageError(f"--set {key} conflicts with --{key.replace('_', '-')}")
            given[key] = value
    opts = engine_options.resolve(v, loss_cls, given)

    resolved = [resolve_data(registry, s) for s in data.split(",")]
    infos = [r.info for r in resolved]
    v.check_data(infos, opts)
    shapes = [list(v.data_shape(i, opts)) for i in infos]

    return {
        "variant": variant,
        "loss": loss_name,
        "data": [{"spec": r.spec, "type": r.type_name, "arg": r.arg, "info": asdict(r.info),
                  "shape": shape} for r, shape in zip(resolved, shapes)],
        "steps": steps,
        "options": opts,
        # A seed is always recorded, so a resumed or re-run job draws the same numbers.
        "seed": seed if seed is not None else secrets.randbelow(2**31),
        "device": device,
        "queue": queue,
        "checkpoint_every": checkpoint_every if checkpoint_every is not None else max(1, min(500, steps)),
        "sample_every": sample_every if sample_every is not None else max(1, min(500, steps)),
    }


def data_infos(config: dict[str, Any]) -> list[DataInfo]:
    """The DataInfo recorded at submit time (generation needs no access to the data)."""
    out = []
    for d in config["data"]:
        info = dict(d["info"])
        info["shape"] = tuple(info["shape"])
        out.append(DataInfo(**info))
    return out
