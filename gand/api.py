"""The interfaces a plugin implements: Variant, Loss, DatasetType, and the values they exchange.

Everything here is public and stable; gand's own first-party plugins (the `plugins/` folder,
installed as `gand_plugins`) use nothing else from the core but gand.engine helpers.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import nn

from gand.errors import UsageError, one_of

# ---------------------------------------------------------------------------------------------
# Options: typed `--set key=value` settings a variant or loss declares.


@dataclass(frozen=True)
class Option:
    """One typed setting with its default; `parse` turns the CLI's text into a checked value."""

    type: type  # int, float, bool or str
    default: Any
    help: str = ""
    choices: Optional[tuple] = None
    min: Optional[float] = None
    max: Optional[float] = None

    def parse(self, key: str, value: Any) -> Any:
        if self.type is bool and isinstance(value, str):
            low = value.lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise UsageError(f"--set {key}={value}: expected true or false")
            out: Any = low in ("1", "true", "yes", "on")
        else:
            try:
                out = self.type(value)
            except (TypeError, ValueError):
                raise UsageError(f"--set {key}={value}: expected {self.type.__name__}") from None
        if self.type is float and out != out:  # NaN
            raise UsageError(f"--set {key}={value}: expected a number, not NaN")
        if self.choices is not None and out not in self.choices:
            raise UsageError(f"--set {key}={value}: expected {one_of(self.choices)}")
        if self.min is not None and out < self.min:
            raise UsageError(f"--set {key}={value}: must be at least {self.min}")
        if self.max is not None and out > self.max:
            raise UsageError(f"--set {key}={value}: must be at most {self.max}")
        return out


def parse_options(declared: dict[str, Option], given: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with the given values, each checked; an unknown key is a UsageError."""
    unknown = set(given) - set(declared)
    if unknown:
        key = sorted(unknown)[0]
        raise UsageError(f"--set {key}: unknown setting; valid: {one_of(declared) }")
    out = {k: o.default for k, o in declared.items()}
    for k, v in given.items():
        out[k] = declared[k].parse(k, v)
    return out


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class DataInfo:
    """What a dataset spec resolves to, found without loading the data (submit-time checks)."""

    spec: str                      # the user's spec, e.g. "ring8" or "mnist:/data/mnist"
    kind: str                      # "vector" or "image"
    shape: tuple[int, ...]         # (dim,) or (channels, height, width) as stored
    num_classes: Optional[int] = None  # labelled data: number of classes
    size: Optional[int] = None     # number of examples; None for an endless synthetic source
    extra: dict = field(default_factory=dict)  # dataset-specific facts (e.g. mode centres)


@dataclass
class Batch:
    """A batch of real data on the training device; images are in [-1, 1]."""

    x: torch.Tensor
    y: Optional[torch.Tensor] = None  # class labels (long) for labelled data


class DataSource(ABC):
    """Loaded data that hands out random batches on a device."""

    info: DataInfo

    @abstractmethod
    def sample(self, n: int) -> Batch:
        """n random examples, drawn with torch's global RNG (so checkpoints can restore it)."""


class TensorSource(DataSource):
    """A dataset held whole in device memory: sampling is one index gather, no loader."""

    def __init__(self, info: DataInfo, x: torch.Tensor, y: Optional[torch.Tensor], device):
        self.info = info
        self.x = x.to(device)
        self.y = None if y is None else y.to(device)

    def sample(self, n: int) -> Batch:
        idx = torch.randint(0, self.x.shape[0], (n,), device=self.x.device)
        return Batch(self.x[idx], None if self.y is None else self.y[idx])


class FunctionSource(DataSource):
    """An endless synthetic distribution: `draw(n, device)` returns (x, labels-or-None)."""

    def __init__(self, info: DataInfo, draw: Callable[[int, torch.device], tuple], device):
        self.info = info
        self.draw = draw
        self.device = torch.device(device)

    def sample(self, n: int) -> Batch:
        x, y = self.draw(n, self.device)
        return Batch(x, y)


class DatasetType(ABC):
    """A kind of dataset, addressed in specs as `NAME` or `NAME:ARG` (ARG often a path)."""

    name: ClassVar[str]
    help: ClassVar[str] = ""
    needs_arg: ClassVar[bool] = False  # True when the spec must carry `:ARG`

    @abstractmethod
    def describe(self, arg: Optional[str]) -> DataInfo:
        """Checks the spec and reports its DataInfo without loading; raises UsageError."""

    @abstractmethod
    def load(self, arg: Optional[str], info: DataInfo, shape: tuple[int, ...],
             device: torch.device) -> DataSource:
        """Loads the data at `shape` (images resized/converted as needed) onto `device`."""


# ---------------------------------------------------------------------------------------------
# Models: what a variant builds, and what a checkpoint holds of it.


class Models:
    """Networks, optimizers and extra state of one job, checkpointable as one state_dict."""

    def __init__(self, nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 extras: Optional[dict[str, Any]] = None):
        self.nets = nets
        self.optimizers = optimizers
        # Tensors or plain numbers/lists a variant must carry across a resume (w_avg, ADA p...).
        self.extras = extras or {}

    def __getattr__(self, name: str):
        nets = self.__dict__.get("nets", {})
        if name in nets:
            return nets[name]
        raise AttributeError(name)

    def train(self, mode: bool = True) -> None:
        for net in self.nets.values():
            net.train(mode)

    def state_dict(self) -> dict:
        return {
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "extras": dict(self.extras),
        }

    def load_state_dict(self, state: dict, *, optimizers: bool = True) -> None:
        for k, net in self.nets.items():
            net.load_state_dict(state["nets"][k])
        if optimizers:
            for k, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][k])
        for k, v in state.get("extras", {}).items():
            current = self.extras.get(k)
            if isinstance(current, torch.Tensor) and isinstance(v, torch.Tensor):
                current.copy_(v)
            else:
                self.extras[k] = v


@dataclass
class StepContext:
    """What a training step may know besides the models and data."""

    step: int                 # the generator update being made, 1-based
    total_steps: int
    batch_size: int
    device: torch.device
    options: dict[str, Any]   # engine options merged with the variant's and the loss's
    data: list[DataSource]    # one source, or two for two-domain variants
    precision: str = "fp32"   # "fp32" or "bf16" (autocast)

    def autocast(self):
        """Mixed precision for forward passes; losses are computed from float32 logits."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.precision == "bf16")


# ---------------------------------------------------------------------------------------------
# Losses


class Loss(ABC):
    """An adversarial objective: one method per phase, with the discriminator at hand.

    `D` is a callable returning the discriminator's raw output (logits or critic scores) for a
    batch, already conditioned on labels where the variant needs them. Regularisers such as the
    gradient penalty need D and the real batch, hence the signature.
    """

    name: ClassVar[str]
    help: ClassVar[str] = ""
    # What the discriminator's output must be: "logits" (a probability's logit) or "critic"
    # (an unbounded score). A variant declares which kinds its D can produce.
    output: ClassVar[str] = "logits"
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, options: Optional[dict[str, Any]] = None):
        self.opts = parse_options(self.options, {}) if options is None else options

    @abstractmethod
    def d_loss(self, D: Callable, real: torch.Tensor, fake: torch.Tensor,
               ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The discriminator's loss for one update and any scalars worth reporting."""

    @abstractmethod
    def g_loss(self, D: Callable, fake: torch.Tensor, real: torch.Tensor,
               ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator's loss for one update and any scalars worth reporting."""

    def after_d_step(self, D: nn.Module, ctx: StepContext) -> None:
        """Called after each discriminator optimizer step (weight clipping lives here)."""


# ---------------------------------------------------------------------------------------------
# Variants


class Variant(ABC):
    """A GAN architecture: builds its networks and optimizers, trains one step, generates."""

    name: ClassVar[str]
    help: ClassVar[str] = ""
    data_kinds: ClassVar[frozenset[str]] = frozenset({"vector", "image"})
    domains: ClassVar[int] = 1            # two-domain variants (cyclegan) take two datasets
    needs_labels: ClassVar[bool] = False  # conditional variants need labelled data
    default_loss: ClassVar[str] = "bce"
    outputs: ClassVar[frozenset[str]] = frozenset({"logits", "critic"})  # what D can produce
    options: ClassVar[dict[str, Option]] = {}
    # New defaults for engine options (lr, batch_size, d_steps, optimizer...) this variant wants.
    defaults: ClassVar[dict[str, Any]] = {}

    def check_data(self, infos: list[DataInfo], options: dict[str, Any]) -> None:
        """Raises UsageError when the data does not suit this variant (called at submit)."""
        if len(infos) != self.domains:
            raise UsageError(f"variant {self.name} takes {self.domains} dataset(s) in --data, "
                             f"got {len(infos)}")
        for info in infos:
            if info.kind not in self.data_kinds:
                raise UsageError(f"variant {self.name} takes {one_of(self.data_kinds)} data; "
                                 f"{info.spec} is {info.kind} data")
            if self.needs_labels and not info.num_classes:
                raise UsageError(f"variant {self.name} needs labelled data; {info.spec} has no labels")

    def data_shape(self, info: DataInfo, options: dict[str, Any]) -> tuple[int, ...]:
        """The shape the data should be loaded at; by default as stored."""
        return info.shape

    @abstractmethod
    def build(self, infos: list[DataInfo], options: dict[str, Any], device: torch.device) -> Models:
        """Fresh networks and optimizers on `device` for data described by `infos`."""

    @abstractmethod
    def train_step(self, models: Models, loss: Loss, ctx: StepContext) -> dict[str, torch.Tensor]:
        """One generator update (and its discriminator updates); returns scalars to report.

        Returned values stay tensors: the engine batches their transfer to the host.
        """

    @abstractmethod
    def sample(self, models: Models, n: int, *, generator: Optional[torch.Generator] = None,
               **kwargs) -> torch.Tensor:
        """n generated examples on the models' device (images in [-1, 1]).

        Variants document the keyword arguments they accept (label, truncation...); gand
        passes only those the user gave.
        """
