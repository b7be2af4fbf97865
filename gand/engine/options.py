"""Training options every variant shares, and how a job's option namespace is assembled.

One flat namespace per job: engine options, then the variant's, then the loss's. A variant may
change an engine option's default (WGAN: RMSprop at 5e-5, five critic steps) through `defaults`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from gand.api import Loss, Option, Variant, parse_options
from gand.engine import augment, tricks
from gand.errors import PluginError, UsageError

ENGINE_OPTIONS: dict[str, Option] = {
    "batch_size": Option(int, 64, "examples per batch", min=1, max=1_000_000),
    "lr": Option(float, 2e-4, "learning rate of both networks", min=0.0),
    "lr_g": Option(float, 0.0, "generator learning rate (0: use lr)", min=0.0),
    "lr_d": Option(float, 0.0, "discriminator learning rate (0: use lr)", min=0.0),
    "optimizer": Option(str, "adam", "optimizer of both networks", choices=("adam", "rmsprop")),
    "beta1": Option(float, 0.5, "Adam beta1", min=0.0, below=1.0),
    "beta2": Option(float, 0.999, "Adam beta2", min=0.0, below=1.0),
    "d_steps": Option(int, 1, "discriminator updates per generator update", min=1, max=100),
    "ema": Option(float, 0.0, "EMA decay of G's weights (0: off; e.g. 0.999)", min=0.0, max=1.0),
    # The fast paths: `auto` lets the worker choose for its device (gand/engine/fastpath.py) and
    # record the choice in the job's config; a value given here is used as is.
    "precision": Option(str, "auto", "auto, fp32, or bf16 autocast", choices=("auto", "fp32", "bf16")),
    "channels_last": Option(str, "auto", "channels_last tensors for convolutions (auto, true, false)",
                            choices=("auto", "true", "false")),
    "compile": Option(str, "auto", "torch.compile the networks (auto, true, false)",
                      choices=("auto", "true", "false")),
    "optim_impl": Option(str, "auto", "optimizer kernels: auto, default, foreach or fused (CUDA)",
                         choices=("auto", "default", "foreach", "fused")),
    "cuda_graph": Option(str, "auto", "replay each step as one CUDA graph (auto: off; true on "
                                      "CUDA for launch-bound steps)",
                         choices=("auto", "true", "false")),
    "lr_decay": Option(float, 0.0, "the last fraction of the steps decays every learning rate "
                                    "linearly to about 0 (0: off; e.g. 0.3)", min=0.0, max=1.0),
    **augment.OPTIONS,  # ada, ada_target, ada_kimg: refused at submit where they cannot apply
    **tricks.OPTIONS,   # pack, mbstd, instance_noise: likewise
}


def declared(variant: Variant, loss_cls: type[Loss]) -> dict[str, Option]:
    """Every option a job with this variant and loss accepts, with the variant's defaults."""
    table = dict(ENGINE_OPTIONS)
    shared = sorted(set(variant.options) & set(loss_cls.options))
    if shared:
        raise UsageError(f"variant {variant.name} and loss {loss_cls.name} both declare option "
                         f"{shared[0]!r}, so --set {shared[0]} would be ambiguous; choose another "
                         f"loss (`gand plugins --check` reports such clashes)")
    for source in (variant.options, loss_cls.options):
        for key, opt in source.items():
            if key in ENGINE_OPTIONS:
                raise PluginError(f"{variant.name}/{loss_cls.name} redeclares engine option "
                                  f"{key!r}; use `defaults` to change its default")
            table[key] = opt
    for key, value in variant.defaults.items():
        if key not in table:
            raise PluginError(f"variant {variant.name} sets a default for unknown option {key!r}")
        table[key] = replace(table[key], default=value)
    return table


def resolve(variant: Variant, loss_cls: type[Loss], given: dict[str, Any],
            flags: dict[str, str] | None = None) -> dict[str, Any]:
    """The job's complete, checked options: defaults overlaid with `--set` values (and the
    options given as their own flags, named in `flags`).

    The optimizer options are declared with exactly the ranges torch.optim checks (rates ≥ 0,
    betas in [0, 1), finite), so a value submit accepts is one the worker's optimizer accepts.
    Submit does not build an optimizer to find out: constructing one imports torch._dynamo,
    seconds of every `gand submit`."""
    return parse_options(declared(variant, loss_cls), given, flags)


def optimizer(params, options: dict[str, Any], which: str) -> torch.optim.Optimizer:
    """The optimizer for network `which` ("g" or "d") as the options ask."""
    lr = options[f"lr_{which}"] or options["lr"]
    if options["optimizer"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, betas=(options["beta1"], options["beta2"]))


def lr_factor(options: dict[str, Any], step: int, total: int) -> float:
    """The learning-rate multiplier at generator step `step` of `total` under `lr_decay`:
    1, then down linearly over the last lr_decay·total steps to 1/(lr_decay·total), never 0."""
    span = float(options.get("lr_decay", 0.0)) * total
    if span <= 0 or step <= 0:
        return 1.0
    return min(1.0, (total - step + 1) / span)


def decay_learning_rates(optimizers, options: dict[str, Any], step: int, total: int) -> None:
    """Moves every optimizer's learning rate from step-1's factor to step's.

    Relative, not absolute: a checkpoint carries the rate it reached, and a rollback's halving
    (gand_workers.runner) survives the schedule."""
    if not options.get("lr_decay"):
        return
    ratio = lr_factor(options, step, total) / lr_factor(options, step - 1, total)
    if ratio != 1.0:
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] *= ratio
