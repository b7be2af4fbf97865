"""A job's configuration: built and checked at submit time (a JobConfig), stored as JSON.

Everything a user can get wrong is found here, before anything is written or queued: unknown
variant, loss or dataset, a missing path, a malformed `--set`, out-of-range numbers.
"""
from __future__ import annotations

import math
import os
import re
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from gand.api import (INT_LIMIT, DataInfo, Loss, Regularizer, SupportsADA, SupportsDTricks,
                      Variant, compose)
from gand.engine import options as engine_options
from gand import presets
from gand.errors import UsageError, one_of
from gand.jobs import config as jobcfg
from gand.jobs.config import (DATASET_NAME_RE, DEVICE_RE, QUEUE_RE, DataConfig, EvalConfig,
                              JobConfig)
from gand.plugins import Registry
from gand.evaluation import spec as eval_spec

FOLDER = "folder"  # the dataset type that receives plain paths

# The registered dataset names and their specs, asked for only when a spec is neither a dataset
# type nor a path; a callable so that this module stays free of the store.
NamedDatasets = Callable[[], dict[str, str]]


@dataclass(frozen=True)
class ResolvedData:
    spec: str
    type_name: str
    arg: Optional[str]
    info: DataInfo
    name: Optional[str] = None  # the registered name the spec was given as, if any


def resolve_data(registry: Registry, spec: str,
                 named: Optional[NamedDatasets] = None) -> ResolvedData:
    """Turns one `--data` spec (`ring8`, `mnist:DIR`, a path, a registered name) into its DataInfo.

    A registered name resolves to the spec stored for it, so `spec` in the result is what the job
    will read even if the name is later removed or pointed elsewhere.
    """
    spec = spec.strip()
    if not spec:
        raise UsageError("--data has an empty dataset spec; expected NAME, NAME:ARG or a path")
    check_text("--data", spec)
    name, sep, arg = spec.partition(":")
    if (name not in registry.datasets and not sep and named is not None
            and DATASET_NAME_RE.match(spec)):
        known = named()
        if spec in known:
            # Stored specs are canonical TYPE:ARG specs: resolved without names, so no loops.
            return replace(resolve_data(registry, known[spec]), name=spec)
        if Path(spec).is_dir() and FOLDER in registry.datasets:
            # `--data faces,anime` beside the folders faces/ and anime/: what was meant. (A name
            # registered later does not change the job: it keeps the spec resolved here.)
            return replace(resolve_data(registry, f"./{spec}"), spec=spec)
        names = (f"registered names: {one_of(known)} (`gand data list`)" if known
                 else "no registered names (`gand data add`)")
        raise UsageError(f"unknown dataset {spec!r}; dataset types: {one_of(registry.datasets)}; "
                         f"{names}; or a folder path")
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
    info = dtype.describe(arg_or_none)  # its errors name the path as it was typed
    if arg_or_none is not None and os.path.exists(os.path.expanduser(arg_or_none)):
        # A worker reads the data from its own directory (a service's, another machine's):
        # the job keeps the path as it was meant here. (Not realpath: a symlink keeps meaning
        # what it points at when the job runs.)
        arg_or_none = os.path.abspath(os.path.expanduser(arg_or_none))
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


def check_text(flag: str, value: str) -> None:
    """Refuses text with control characters (a NUL byte cannot be a path, a PostgreSQL string
    or a useful name)."""
    if not value.isprintable():
        raise UsageError(f"{flag} {value!r} is invalid: it holds a control character")


def check_count(flag: str, value: Optional[int], low: int = 1,
                high: int = jobcfg.MAX_STEPS) -> None:
    """Refuses a step count or interval outside [low, high]: one the database could not hold
    is refused here, naming the flag, on SQLite and PostgreSQL alike."""
    if value is not None and not low <= value <= high:
        raise UsageError(f"{flag} {value} is invalid; expected an integer from {low} to {high}")


def check_positive_number(flag: str, value: Optional[float]) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{flag} {value} is invalid; expected a positive finite number")


# The options that also have a flag of their own, to name the flag in messages about them.
FLAGS = {"batch_size": "--batch-size", "lr": "--lr"}


def build_config(registry: Registry, *, variant: str, data: str, loss: Optional[str] = None,
                 steps: Optional[int] = None, batch_size: Optional[int] = None,
                 lr: Optional[float] = None, preset: Optional[str] = None,
                 sets: Optional[list[str]] = None, seed: Optional[int] = None,
                 device: str = jobcfg.DEVICE, queue: str = jobcfg.QUEUE, checkpoint_every: Optional[int] = None,
                 sample_every: Optional[int] = None,
                 named: Optional[NamedDatasets] = None,
                 evaluation: Optional[dict[str, Any]] = None,
                 max_recoveries: int = jobcfg.MAX_RECOVERIES,
                 keep_checkpoints: int = jobcfg.KEEP_CHECKPOINTS,
                 on_diverge: str = jobcfg.ON_DIVERGE, priority: int = jobcfg.PRIORITY,
                 gpus: Optional[int] = None,
                 min_gpu_mem: Optional[float] = None) -> JobConfig:
    """Checks every submit option and returns the job config that workers will run.

    `evaluation` holds the keyword arguments of gand.evaluation.spec.eval_config (every,
    metrics, best_by, classifier, num_samples, sets). Options are, from weakest to strongest:
    the engine's defaults, the variant's, the variant's for this data (`data_defaults`), the
    preset's, then `--set` and the flags. `steps` None: the preset's, the variant's for this
    data, else jobcfg.STEPS.
    """
    v: Variant = registry.variant(variant)
    chosen = presets.get(preset, variant) if preset is not None else None
    loss_cls: type[Loss] = loss_class(registry, loss or v.default_loss)
    loss_name = loss_cls.name
    if loss_cls.output not in v.outputs:
        raise UsageError(f"loss {loss_name} needs a discriminator that outputs {loss_cls.output}; "
                         f"variant {variant} outputs {one_of(v.outputs)}")
    if steps is not None:
        check_count("--steps", steps)
    check_count("--batch-size", batch_size, high=INT_LIMIT)  # the option says how big at most
    check_count("--checkpoint-every", checkpoint_every, low=0)
    check_count("--sample-every", sample_every, low=0)
    if seed is not None and not 0 <= seed < 2**63:
        raise UsageError(f"--seed {seed} is invalid; expected 0 ≤ seed < 2^63")
    check_positive_number("--lr", lr)
    if not DEVICE_RE.match(device):
        raise UsageError(f"--device {device!r} is invalid; expected auto, cpu, cuda or cuda:N")
    if not QUEUE_RE.match(queue):
        raise UsageError(f"--queue {queue!r} is invalid; expected letters, digits, '_', '.', '-'")

    given: dict[str, Any] = parse_sets(sets or [])
    flags: dict[str, str] = {}
    for key, value in (("batch_size", batch_size), ("lr", lr)):
        if value is not None:
            if key in given:
                raise UsageError(f"--set {key} conflicts with {FLAGS[key]}")
            given[key], flags[key] = value, FLAGS[key]
    # What the user typed is checked first, before the data is looked at.
    engine_options.resolve(v, loss_cls, given, flags)
    resolved = [resolve_data(registry, s, named) for s in data.split(",")]
    infos = [r.info for r in resolved]
    # The recipe's values under what the user typed: each is parsed and checked like --set.
    declared = engine_options.declared(v, loss_cls)
    recipe = dict(v.data_defaults(infos))
    default_steps = recipe.pop("steps", None)
    if chosen is not None:
        recipe.update(chosen.settings)
        default_steps = chosen.steps or default_steps
    given = {**{k: val for k, val in recipe.items() if k in declared}, **given}
    opts = engine_options.resolve(v, loss_cls, given, flags)
    steps = steps if steps is not None else default_steps or jobcfg.STEPS
    v.check_data(infos, opts)
    check_combination(v, loss_cls, infos, opts)
    shapes = [list(v.data_shape(i, opts)) for i in infos]

    reliability_options(max_recoveries=max_recoveries, keep_checkpoints=keep_checkpoints,
                        on_diverge=on_diverge)
    device = placement_options(priority, gpus, min_gpu_mem, device)
    if opts.get("cuda_graph") == "true" and (device == "cpu" or gpus == 0):
        raise UsageError(f"--set cuda_graph=true needs a CUDA device, but the job asks for "
                         f"{'--gpus 0' if gpus == 0 else '--device cpu'}; drop one or the other")
    if opts.get("cuda_graph") == "true" and gpus is None:
        gpus = 1  # a GPU job: only a worker with a GPU claims it (gand show says why it waits)
    # None unless --eval-every: then metrics, best-by and classifier, checked here.
    ev = eval_spec.eval_config(registry, infos[0], **(evaluation or {}))
    default_every = max(1, min(jobcfg.SCHEDULE_CAP, steps))
    return JobConfig(
        variant=variant,
        loss=loss_name,
        preset=preset,
        # `spec` is what was resolved (a registered name's stored spec); `name` the name given.
        data=tuple(DataConfig(spec=r.spec, name=r.name, type=r.type_name, arg=r.arg,
                              info=asdict(r.info), shape=tuple(shape))
                   for r, shape in zip(resolved, shapes)),
        steps=steps,
        options=opts,
        # A seed is always recorded, so a resumed or re-run job draws the same numbers.
        seed=seed if seed is not None else secrets.randbelow(2**31),
        device=device,
        queue=queue,
        checkpoint_every=checkpoint_every if checkpoint_every is not None else default_every,
        sample_every=sample_every if sample_every is not None else default_every,
        eval=None if ev is None else EvalConfig(
            every=ev["every"], metrics=tuple(ev["metrics"]), num_samples=ev["num_samples"],
            best_by=ev["best_by"], classifier=ev["classifier"], options=dict(ev["options"])),
        max_recoveries=max_recoveries,
        keep_checkpoints=keep_checkpoints,
        on_diverge=on_diverge,
        priority=priority,
        gpus=gpus,
        min_gpu_mem_gb=min_gpu_mem,
    )


def loss_class(registry: Registry, spec: str) -> type[Loss]:
    """The Loss class a `--loss` spec names: `BASE` or `BASE+REG[+REG…]` (e.g. hinge+r1)."""
    parts = [p.strip() for p in spec.split("+")]
    if not all(parts):
        raise UsageError(f"--loss {spec!r} has an empty part; expected LOSS or LOSS+REGULARISER[+…]")
    classes = [registry.loss_class(p) for p in parts]
    regs_installed = sorted(n for n, c in registry.losses.items() if issubclass(c, Regularizer))
    base, regs = classes[0], classes[1:]
    if issubclass(base, Regularizer):
        raise UsageError(f"--loss {spec}: {base.name} is a regulariser, not a loss; put it after "
                         f"one, e.g. --loss wasserstein+{base.name}")
    for r in regs:
        if not issubclass(r, Regularizer):
            raise UsageError(f"--loss {spec}: {r.name} is a loss; give one loss, then regularisers "
                             f"({one_of(regs_installed)})")
        if parts.count(r.name) > 1:
            raise UsageError(f"--loss {spec}: {r.name} is given twice")
        clash = sorted(r.conflicts & set(parts))
        if clash:
            raise UsageError(f"--loss {spec}: {r.name} cannot be combined with {clash[0]}")
        if base.output not in r.outputs:
            raise UsageError(f"--loss {spec}: {r.name} suits losses on {one_of(r.outputs)}; "
                             f"{base.name} is computed from {base.output}")
    return compose(base, regs)


def check_combination(v: Variant, loss_cls: type[Loss], infos: list[DataInfo],
                      opts: dict[str, Any]) -> None:
    """Refuses a loss (with its regularisers) or option that this variant's D cannot support."""
    v.check_loss(loss_cls)
    mixes = v.d_mixes_batch(infos, opts) if loss_cls.per_example_d else None
    if mixes:
        raise UsageError(f"--loss {loss_cls.name} penalises D's gradient example by example, but "
                         f"{mixes}")
    if opts.get("ada"):
        if not isinstance(v, SupportsADA):
            raise UsageError(f"--set ada=true: variant {v.name} does not support adaptive "
                             f"discriminator augmentation")
        bad = [i.spec for i in infos if i.kind != "image"]
        if bad:
            raise UsageError(f"--set ada=true augments images; {bad[0]} is vector data")
    check_tricks(v, opts)
    if opts.get("cuda_graph") == "true":
        from gand.engine.graphs import unsupported

        why = unsupported(v, loss_cls, opts)
        if why:
            raise UsageError(f"--set cuda_graph=true cannot capture this job's step: {why}; "
                             f"use cuda_graph=auto or false")


def check_tricks(v: Variant, opts: dict[str, Any]) -> None:
    """Refuses pack, mbstd and instance noise where they cannot apply or cannot divide the batch."""
    asked = {"pack": opts.get("pack", 1) > 1, "mbstd": opts.get("mbstd", 0) > 0,
             "instance_noise": opts.get("instance_noise", 0.0) > 0}
    for key in (k for k, on in asked.items() if on):
        if not isinstance(v, SupportsDTricks):
            raise UsageError(f"--set {key}={opts[key]}: variant {v.name} trains its D its own "
                             f"way, so this trick does not apply to it")
    bs, pack, group = opts["batch_size"], opts.get("pack", 1), opts.get("mbstd", 0)
    if pack > 1:
        if v.needs_labels:
            raise UsageError(f"--set pack={pack}: variant {v.name}'s D judges each sample with "
                             f"its label, so samples cannot be packed; use pack=1")
        if bs % pack:
            raise UsageError(f"--set pack={pack}: the batch size {bs} is not a multiple of "
                             f"{pack}; choose a batch size that is, or another pack")
    if group == 1:
        raise UsageError("--set mbstd=1: a group of one has no spread; use 0 (off) or a group "
                         "size of at least 2, e.g. 4")
    if group > 1 and (bs // pack) % group:
        packs = f" ({bs // pack} packs of {pack})" if pack > 1 else ""
        raise UsageError(f"--set mbstd={group}: D sees batches of {bs // pack}{packs}, which do "
                         f"not split into groups of {group}; choose a group size that divides "
                         f"{bs // pack}")


def data_infos(config: JobConfig) -> list[DataInfo]:
    """The DataInfo recorded at submit time (generation needs no access to the data)."""
    out = []
    for d in config.data:
        info = dict(d.info)
        info["shape"] = tuple(info["shape"])
        out.append(DataInfo(**info))
    return out


def reliability_options(*, max_recoveries: int, keep_checkpoints: int, on_diverge: str) -> None:
    """Checks the submit options about faults."""
    if not 0 <= max_recoveries <= 100:
        raise UsageError(f"--max-recoveries {max_recoveries} is invalid; expected 0 to 100")
    if not 0 <= keep_checkpoints <= 10_000:
        raise UsageError(f"--keep-checkpoints {keep_checkpoints} is invalid; expected 0 (keep all) "
                         f"to 10000")
    if on_diverge not in jobcfg.ON_DIVERGE_CHOICES:
        raise UsageError(f"--on-diverge {on_diverge!r} is invalid; expected "
                         f"{one_of(jobcfg.ON_DIVERGE_CHOICES)}")


def placement_options(priority: int, gpus: Optional[int], min_gpu_mem: Optional[float],
                      device: str) -> str:
    """Checks --priority, --gpus and --min-gpu-mem against each other and --device; returns the
    device the job runs on (a CPU job, --gpus 0, runs on the CPU wherever it lands)."""
    low, high = jobcfg.PRIORITY_RANGE
    if not low <= priority <= high:
        raise UsageError(f"--priority {priority} is invalid; expected {low} to {high} (higher "
                         f"runs first)")
    if gpus is not None and gpus not in (0, 1):
        raise UsageError(f"--gpus {gpus} is invalid; expected 0 (a CPU job) or 1 (a GPU job)")
    if min_gpu_mem is not None:
        if not (min_gpu_mem == min_gpu_mem and 0 < min_gpu_mem <= 10_000):
            raise UsageError(f"--min-gpu-mem {min_gpu_mem} is invalid; expected gigabytes, "
                             f"more than 0 and at most 10000")
        if gpus == 0:
            raise UsageError(f"--min-gpu-mem {min_gpu_mem:g} asks for a GPU, but --gpus 0 asks "
                             f"for a CPU job; drop one")
    if gpus == 0:
        if device.startswith("cuda"):
            raise UsageError(f"--device {device} asks for a GPU, but --gpus 0 asks for a CPU "
                             f"job; drop one")
        return "cpu"
    if (gpus == 1 or min_gpu_mem) and device == "cpu":
        raise UsageError("--device cpu contradicts --gpus 1 / --min-gpu-mem; drop one")
    return device

