"""The interfaces a plugin implements: Variant, Loss, DatasetType, and the values they exchange.

Everything here is public and stable; gand's own first-party plugins (the `plugins/` folder,
installed as `gand_plugins`) use nothing else from the core but gand.engine helpers.
"""
from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import nn

from gand.errors import UsageError, one_of

# ---------------------------------------------------------------------------------------------
# Options: typed `--set key=value` settings a variant or loss declares.


# The largest integer gand stores anywhere (a signed 64-bit column or JSON number both hold it).
INT_LIMIT = 2**63 - 1


@dataclass(frozen=True)
class Option:
    """One typed setting with its default; `parse` turns the CLI's text into a checked value.

    Every float must be finite and every int must fit 64 bits, whatever the plugin declares: a
    value the database or the JSON in it cannot hold is refused here, at submit. `below` is an
    exclusive upper bound (Adam's betas must be < 1).
    """

    type: type  # int, float, bool or str
    default: Any
    help: str = ""
    choices: Optional[tuple] = None
    min: Optional[float] = None
    max: Optional[float] = None
    below: Optional[float] = None

    def parse(self, key: str, value: Any, flag: Optional[str] = None) -> Any:
        """The checked value; `flag` is the option the user typed (`--batch-size`) when the
        value did not come from `--set key=value`, so that messages name what was typed."""
        said = f"{flag} {value}" if flag else f"--set {key}={value}"
        if self.type is bool and isinstance(value, str):
            low = value.lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise UsageError(f"{said}: expected true or false")
            out: Any = low in ("1", "true", "yes", "on")
        else:
            try:
                out = self.type(value)
            except (TypeError, ValueError, OverflowError):
                raise UsageError(f"{said}: expected {self.type.__name__}") from None
        if self.type is float and not math.isfinite(out):  # NaN, inf, or 1e400 read as inf
            raise UsageError(f"{said}: expected a finite number")
        if self.choices is not None and out not in self.choices:
            raise UsageError(f"{said}: expected {one_of(self.choices)}")
        if self.min is not None and out < self.min:
            raise UsageError(f"{said}: must be at least {_num(self.min)}")
        if self.max is not None and out > self.max:
            raise UsageError(f"{said}: must be at most {_num(self.max)}")
        if self.below is not None and out >= self.below:
            raise UsageError(f"{said}: must be below {_num(self.below)}")
        if self.type is int and not -INT_LIMIT <= out <= INT_LIMIT:
            raise UsageError(f"{said}: expected an integer within ±{INT_LIMIT}")
        return out


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def parse_options(declared: dict[str, Option], given: dict[str, Any],
                  flags: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Defaults overlaid with the given values, each checked; an unknown key is a UsageError.

    `flags` maps a key to the option it was given as (`batch_size` → `--batch-size`)."""
    unknown = set(given) - set(declared)
    if unknown:
        key = sorted(unknown)[0]
        raise UsageError(f"--set {key}: unknown setting; valid: {one_of(declared) }")
    out = {k: o.default for k, o in declared.items()}
    for k, v in given.items():
        out[k] = declared[k].parse(k, v, (flags or {}).get(k))
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
        """Loads a checkpoint's state; one that does not fit these networks is a UsageError
        naming what differs (a checkpoint of another job, or of other options)."""
        try:
            missing = sorted(set(self.nets) - set(state["nets"]))
            if missing:
                raise UsageError(f"the checkpoint has no network {missing[0]!r}; it holds "
                                 f"{one_of(state['nets'])}")
            for k, net in self.nets.items():
                net.load_state_dict(state["nets"][k])
            if optimizers:
                for k, opt in self.optimizers.items():
                    opt.load_state_dict(state["optimizers"][k])
        except (KeyError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"the checkpoint does not match this job's networks: "
                             f"{first}") from None
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
    graphed: bool = False     # the step is recorded as a CUDA graph (gand.engine.graphs)

    def autocast(self):
        """Mixed precision for forward passes; losses are computed from float32 logits."""
        if self.precision != "bf16":
            # Nothing to switch: a disabled torch.autocast still costs 2.5 us to enter and
            # leave, five times a step (1% of a ring8 step on a CPU).
            return contextlib.nullcontext()
        # A graph must not keep autocast's cached weight casts from the capture: torch's
        # documentation asks for the cache off in captured regions.
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              cache_enabled=not self.graphed)


# ---------------------------------------------------------------------------------------------
# Losses


class Loss(ABC):
    """An adversarial objective: one method per phase, with the discriminator at hand.

    `D` is a callable returning the discriminator's raw output for a batch — one float32 value
    per example (logits or critic scores), already conditioned on labels where the variant
    needs them, and under the step's autocast. Both methods take the real and the fake batch
    as keyword-only arguments, so they can never be swapped by position. Regularisers such as
    the gradient penalty need D and the real batch, hence the signature.

    A loss that carries state from step to step (BEGAN's equilibrium term k) keeps it in
    `state_dict()`/`load_state_dict()`: it is saved in every checkpoint and restored on resume.
    """

    name: ClassVar[str]
    help: ClassVar[str] = ""
    # What the discriminator's output must be: "logits" (a probability's logit) or "critic"
    # (an unbounded score). A variant declares which kinds its D can produce.
    output: ClassVar[str] = "logits"
    options: ClassVar[dict[str, Option]] = {}
    # True when the loss differentiates D example by example (gradient penalties): D must then
    # not mix the examples of a batch (no BatchNorm), which is checked at submit.
    per_example_d: ClassVar[bool] = False

    def __init__(self, options: Optional[dict[str, Any]] = None):
        self.opts = parse_options(self.options, {}) if options is None else options

    @abstractmethod
    def d_loss(self, D: Callable, *, real: torch.Tensor, fake: torch.Tensor,
               ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The discriminator's loss for one update and any scalars worth reporting."""

    @abstractmethod
    def g_loss(self, D: Callable, *, real: torch.Tensor, fake: torch.Tensor,
               ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator's loss for one update and any scalars worth reporting.

        `fake` carries G's graph; `real` is there for losses that compare with it.
        """

    def after_d_step(self, D: nn.Module, ctx: StepContext) -> None:
        """Called after each discriminator optimizer step (weight clipping lives here)."""

    def state_dict(self) -> dict[str, Any]:
        """State carried from step to step (tensors, numbers, lists), saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` returned (called on resume, before the first step)."""


class Regularizer(ABC):
    """A term added to a base loss, written `--loss BASE+NAME` (e.g. hinge+r1, wasserstein+clip).

    Registered through `gand_register_losses` like a Loss; its options join the job's option
    namespace. `d_penalty` adds to the discriminator's loss, `after_d_step` constrains D's
    weights after each of its updates.
    """

    name: ClassVar[str]
    help: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    outputs: ClassVar[frozenset[str]] = frozenset({"logits", "critic"})  # base losses it suits
    per_example_d: ClassVar[bool] = False  # as Loss.per_example_d
    conflicts: ClassVar[frozenset[str]] = frozenset()  # parts it must not be combined with

    def __init__(self, options: Optional[dict[str, Any]] = None):
        self.opts = parse_options(self.options, {}) if options is None else options

    def d_penalty(self, D: Callable, *, real: torch.Tensor, fake: torch.Tensor,
                  ctx: StepContext) -> tuple[Optional[torch.Tensor], dict[str, torch.Tensor]]:
        """A term added to the discriminator's loss (None: nothing) and scalars to report."""
        return None, {}

    def after_d_step(self, D: nn.Module, ctx: StepContext) -> None:
        """Called after each discriminator optimizer step, after the base loss's own."""

    def state_dict(self) -> dict[str, Any]:
        """As Loss.state_dict: state carried from step to step, saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """As Loss.load_state_dict."""


class ComposedLoss(Loss):
    """A base loss plus regularisers; `compose` makes one subclass per combination."""

    base: ClassVar[type[Loss]]
    regularizers: ClassVar[tuple[type[Regularizer], ...]] = ()

    def __init__(self, options: Optional[dict[str, Any]] = None):
        super().__init__(options)
        self.base_loss = self.base(self.opts)
        self.parts = [r(self.opts) for r in self.regularizers]

    def d_loss(self, D, *, real, fake, ctx):
        loss, report = self.base_loss.d_loss(D, real=real, fake=fake, ctx=ctx)
        report = dict(report)
        for part in self.parts:
            term, extra = part.d_penalty(D, real=real, fake=fake, ctx=ctx)
            if term is not None:
                loss = loss + term
            report.update(extra)
        return loss, report

    def g_loss(self, D, *, real, fake, ctx):
        return self.base_loss.g_loss(D, real=real, fake=fake, ctx=ctx)

    def after_d_step(self, D, ctx):
        self.base_loss.after_d_step(D, ctx)
        for part in self.parts:
            part.after_d_step(D, ctx)

    def state_dict(self):
        return {"base": self.base_loss.state_dict(),
                "parts": {p.name: p.state_dict() for p in self.parts}}

    def load_state_dict(self, state):
        self.base_loss.load_state_dict(state.get("base", {}))
        for p in self.parts:
            p.load_state_dict(state.get("parts", {}).get(p.name, {}))


def compose(base: type[Loss], regularizers: list[type[Regularizer]]) -> type[Loss]:
    """The Loss class for `BASE+REG+…`: the base's output kind, every part's options."""
    if not regularizers:
        return base
    names = [base.name] + [r.name for r in regularizers]
    options = dict(base.options)
    owner = {k: base.name for k in options}
    for r in regularizers:
        for key, opt in r.options.items():
            if key in options:
                raise UsageError(f"--loss {'+'.join(names)}: {r.name} and {owner[key]} both set "
                                 f"option {key!r} ({r.name} repeats part of {owner[key]})")
            options[key], owner[key] = opt, r.name
    return type("ComposedLoss", (ComposedLoss,), {
        "name": "+".join(names), "help": " + ".join(c.help or c.name for c in [base, *regularizers]),
        "output": base.output, "options": options, "base": base,
        "regularizers": tuple(regularizers),
        "per_example_d": base.per_example_d or any(r.per_example_d for r in regularizers)})


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

    def data_defaults(self, infos: list[DataInfo]) -> dict[str, Any]:
        """Option defaults this variant recommends for this data (e.g. gan's recipes for ring8
        and grid25), and optionally "steps", a default for `--steps`. They apply over
        `defaults`, and under a `--preset` and explicit `--set` values. By default none."""
        return {}

    def d_mixes_batch(self, infos: list[DataInfo], options: dict[str, Any]) -> Optional[str]:
        """Why D mixes the examples of a batch, which gradient penalties forbid; None if not.

        The answer is shown to the user with what to do, e.g. "variant dcgan's D uses BatchNorm;
        use --set d_norm=instance or none". By convention a variant whose D normalisation is the
        option `d_norm` uses "batch" for BatchNorm; variants with other networks override this.
        """
        if options.get("d_norm") == "batch":
            return (f"variant {self.name}'s D uses BatchNorm; use --set d_norm=instance or "
                    f"none")
        return None

    def check_loss(self, loss_cls: type[Loss]) -> None:
        """Raises UsageError when this variant cannot train with `loss_cls` (called at submit).

        For refusals the output kind (`outputs`) cannot express; by default every loss whose
        output kind matches is accepted.
        """

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

    def preview(self, models: Models, data: list[DataSource], generator: Optional[torch.Generator],
                n: int = 64) -> torch.Tensor:
        """The pictures of the trainer's periodic sample grid; by default n samples.

        `generator` is seeded the same way every time, so grids over time are comparable;
        `data` is the job's loaded data (translation variants show real images translated).
        """
        return self.sample(models, n, generator=generator)


# ---------------------------------------------------------------------------------------------
# Optional capabilities of a variant. A variant has one by inheriting its class (next to
# Variant) and implementing its methods; gand finds them with isinstance, never by probing
# attributes, and `gand plugins` lists them.


class LatentSpace(ABC):
    """G maps a latent vector (and a label, for conditional variants) to a sample.

    `gand interpolate` walks between latents (a row, or a 2-D grid) with these two methods.
    """

    @abstractmethod
    def latent(self, models: Models, n: int, device: torch.device,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n latents drawn from the prior, shape (n, nz)."""

    @abstractmethod
    def generate_from(self, G: nn.Module, z: torch.Tensor,
                      y: Optional[torch.Tensor]) -> torch.Tensor:
        """G's outputs for latents `z` (and labels `y`, or None)."""


class Truncation(ABC):
    """`sample(..., truncation=psi)` pulls samples toward the mean (StyleGAN's truncation trick);
    `gand generate --truncation PSI` is refused for variants without it."""


class StyleMixing(ABC):
    """A style-mixing grid: `gand interpolate` draws it for such a variant."""

    @abstractmethod
    def style_mixing_grid(self, models: Models, rows: int, cols: Optional[int] = None,
                          generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(rows + 1) × (cols + 1) pictures: the source images in the first row and column,
        each other picture one row's coarse styles with one column's fine styles."""


class Translation(ABC):
    """Image-to-image translation between two domains (`gand translate`, A→B→A triplets)."""

    @abstractmethod
    def translate(self, models: Models, images: torch.Tensor,
                  direction: str = "a2b") -> torch.Tensor:
        """Images of one domain in [-1, 1] translated to the other ("a2b" or "b2a")."""

    @abstractmethod
    def cycle_triplets(self, models: Models, images: torch.Tensor,
                       direction: str = "a2b") -> torch.Tensor:
        """x, its translation and the way back, interleaved: 3·n images (nrow = 3)."""


class SupportsADA(ABC):
    """`--set ada=true` (adaptive discriminator augmentation, StyleGAN2-ADA) applies: every
    image D sees goes through gand.engine.augment. AdversarialVariant's step does this; a
    variant with its own step declares it only if that step augments too."""


class SupportsDTricks(ABC):
    """The anti-collapse tricks on D apply (`--set pack=m`, `mbstd=g`, `instance_noise=σ`, see
    gand.engine.tricks): D is built through AdversarialVariant.build, which wraps it, and
    called only through its step, which adds the noise. A variant with its own build or step,
    or whose D judges samples with labels (no packing then), declares it only if that holds."""


CAPABILITIES: dict[str, type] = {
    "latent-space": LatentSpace, "truncation": Truncation, "style-mixing": StyleMixing,
    "translation": Translation, "ada": SupportsADA, "d-tricks": SupportsDTricks,
}


def capabilities(variant: Any) -> list[str]:
    """The optional capabilities a variant (class or instance) declares, by name."""
    cls = variant if isinstance(variant, type) else type(variant)
    return [name for name, cap in CAPABILITIES.items() if issubclass(cls, cap)]


# ---------------------------------------------------------------------------------------------
# Metrics: what a generator learned, computed during training and on demand.


@dataclass
class EvalContext:
    """What a metric may use for one evaluation: samples, real data, and the protocol asked for."""

    info: DataInfo                  # the job's (first) dataset, as recorded at submit
    num_samples: int                # generated samples asked for (a metric may fix its own)
    device: torch.device
    generate: Callable[[int], torch.Tensor]  # n generated samples (images in [-1, 1]), cached
    real: Callable[[int], torch.Tensor]      # n real examples; the labelled case drops labels
    reference: str                  # the reference set, as it will be recorded
    options: dict[str, Any] = field(default_factory=dict)  # every selected metric's options
    classifier: Optional[str] = None  # the MNIST classifier file, if the job has one
    extractor: Optional[str] = None   # the feature extractor asked for (None: the default)
    warn: Callable[[str], None] = lambda text: None  # becomes a job event (a collapse warning)
    cache: dict = field(default_factory=dict)  # shared by metrics across one job's evaluations


@dataclass(frozen=True)
class MetricProtocol:
    """How a value was measured; stored beside it so values are only compared like for like."""

    extractor: Optional[str]
    num_samples: int
    reference: str


class Metric(ABC):
    """A measure of a generator: computes named values from an EvalContext.

    Each key it reports declares which way is better in `directions` ("min" or "max"), which
    `--best-by` uses to pick the best checkpoint; `headline` is the key that `--best-by NAME`
    means when given the metric's name.
    """

    name: ClassVar[str]
    help: ClassVar[str] = ""
    data_kinds: ClassVar[frozenset[str]] = frozenset({"vector", "image"})
    directions: ClassVar[dict[str, str]] = {}
    headline: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    needs_classifier: ClassVar[bool] = False
    # True when it compares features from an extractor (InceptionV3 or the MNIST classifier):
    # left out of a job's default metrics when neither is available.
    uses_extractor: ClassVar[bool] = False

    def check(self, info: DataInfo, classifier: Optional[str]) -> None:
        """Raises UsageError when this metric cannot measure a job on `info` (called at submit)."""
        if info.kind not in self.data_kinds:
            raise UsageError(f"metric {self.name} takes {one_of(self.data_kinds)} data; "
                             f"{info.spec} is {info.kind} data")
        if self.needs_classifier and not classifier:
            raise UsageError(f"metric {self.name} needs the MNIST classifier: pass "
                             f"--eval-classifier FILE (gand submit) or --classifier FILE (gand eval)")

    def protocol(self, ctx: EvalContext) -> MetricProtocol:
        """The protocol of the values `compute` returns for `ctx`."""
        return MetricProtocol(None, ctx.num_samples, ctx.reference)

    @abstractmethod
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        """The metric's values, keyed as in `directions`."""
