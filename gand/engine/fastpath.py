"""How a job's step runs fast on the device it landed on: precision, memory layout, compilation
and the optimizer's implementation.

Each is an engine option (`--set precision=…`, `channels_last=…`, `compile=…`, `optim_impl=…`,
`cuda_graph=…`) whose default is `auto`. The worker resolves `auto` here, once it knows the
device and has built the networks, and records what it chose and why in the job's config
(`runtime`), so `gand show` tells what actually ran. A value given explicitly is never second-guessed.

The automatic choices follow the measurements in the README's speed section (the benchmark is
tests/benchmarks/bench.py); the rules are deliberately few:

* On the CPU everything stays plain: fp32, the default layout, no compilation (its start-up
  costs minutes of a small job's life), and torch's default optimizer loop — except that a CPU
  with bf16 matrix instructions (AMX or AVX512-BF16; elsewhere bf16 is emulated and slower)
  runs convolutional steps of ≥ CPU_BF16_FLOPS under bf16 autocast with channels_last (but
  networks built mostly of InstanceNorm-ed convolutions, CycleGAN's, keep the default layout).
* On CUDA, convolutional models whose step is large (≥ BF16_FLOPS of forward work per step)
  run under bf16 autocast with channels_last tensors, where the tensor cores pay; small steps
  are bound by kernel launches, where bf16's extra casts only add kernels (DCGAN 64 px at batch
  128). torch.compile is chosen only for large convolutional steps with no double backward
  (gradient penalties), where fusing the normalisation and activation kernels pays back its
  start-up. Optimizers use the fused CUDA kernels (one launch per step instead of one per tensor).
* CUDA graphs (gand/engine/graphs.py) are used only when asked for (`cuda_graph=true`): they
  exist for launch-bound steps, but no GPU has measured them yet, so `auto` leaves them off.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gand.api import Batch, DataSource, Models
from gand.errors import UsageError

# Forward FLOPs per step (each network once on one batch, as step_flops counts them) above which
# bf16 + channels_last pay on a GPU. On an H100 (README, Speed): DCGAN 64 px at batch 128
# (53 GFLOP) ran 0.93x the fp32 reference in bf16 against 1.13x in fp32, WGAN-GP at batch 64
# (27 GFLOP) 1.21x against 1.66x; at batch 1024 (427 GFLOP) bf16 gave 2.25x against 1.06x;
# CycleGAN 256 at batch 1 (211 GFLOP) 0.99x against 0.88x.
BF16_FLOPS = 2.0e11
# ... and above which torch.compile's start-up (about a minute) is repaid: CycleGAN 256 at
# batch 8 (1.7 TFLOP) ran 2.00x with compile against 1.20x without.
COMPILE_FLOPS = 1.0e12
# ... and, on a CPU with native bf16, above which bf16 + channels_last pay there. On this
# project's 2-core Xeon with AMX (README, Speed), against gand's own fp32 step: MNIST DCGAN at
# batch 8 (0.22 GFLOP) 1.18x, batch 32 1.58x, batch 64 (1.8 GFLOP) 1.8x; DCGAN 64 px at batch
# 128 2.5x; the ring8 MLP 0.75x (not convolutional: never chosen). The CPU is never slower
# in these; the threshold keeps tiny networks (tests' 8-channel DCGANs, 0.01 GFLOP) in fp32.
CPU_BF16_FLOPS = 2.0e8
# ... but not channels_last where InstanceNorm follows most convolutions: the CPU's instance
# norm works on a contiguous view, so each one copies the layout there and back. In bf16 on
# that CPU, channels_last made CycleGAN's step 0.83x (256 px at batch 1, and 128 px at batch 4;
# 0.9 InstanceNorms per convolution), while DCGANs gained 1.05-1.35x, 1.07x even with
# InstanceNorm in D (d_norm=instance: 0.17 per convolution).
CPU_CHANNELS_LAST_MAX_INSTANCE_NORMS = 0.5


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (Linux's /proc/cpuinfo flags amx_bf16 or
    avx512_bf16); elsewhere, or unreadable, False."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(f in flags.split() for f in ("amx_bf16", "avx512_bf16"))


@dataclass(frozen=True)
class Runtime:
    """What ran: the resolved value of each fast-path option, and why."""

    device: str
    precision: str        # fp32 | bf16
    channels_last: bool
    compile: bool
    optim_impl: str       # default | foreach | fused
    why: str
    # Added after the others: a runtime stored before CUDA graphs existed reads as False.
    cuda_graph: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flag(value: Any) -> bool | None:
    """`auto` → None; true/false (as given on the command line or stored) → bool."""
    if isinstance(value, bool):
        return value
    return {"auto": None, "true": True, "false": False}[str(value)]


def is_convolutional(models: Models) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
               for net in models.nets.values() for m in net.modules())


def instance_norm_share(models: Models) -> float:
    """InstanceNorm layers per convolution, over all networks (EMA copies aside)."""
    mods = [m for name, net in models.nets.items() if not name.endswith("_ema")
            for m in net.modules()]
    convs = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in mods)
    norms = sum(isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in mods)
    return norms / convs if convs else 0.0


def step_flops(models: Models, data: list[DataSource], batch_size: int) -> float:
    """A cheap estimate of one step's forward work: each network applied once to one example
    (an image of the data's shape, or a latent for a generator), counted by torch's FLOP
    counter, times the batch size. A step does several such passes; the thresholds above are
    set in these units."""
    if not data or data[0].info.kind != "image":
        return 0.0
    from torch.utils.flop_counter import FlopCounterMode

    shape = tuple(data[0].info.shape)
    nz = models.extras.get("nz")
    total = 0.0
    for name, net in models.nets.items():
        if name.endswith("_ema") or not any(True for _ in net.parameters()):
            continue  # an EMA copy serves previews only
        dev = next(net.parameters()).device
        was_training = net.training
        net.eval()  # BatchNorm refuses one example in training mode
        inputs = [torch.zeros(1, *shape, device=dev)]
        if nz:
            inputs.append(torch.zeros(1, int(nz), device=dev))
        for x in inputs:
            counter = FlopCounterMode(display=False)
            try:
                with torch.no_grad(), counter:
                    net(x)
            except Exception:  # noqa: BLE001  (an estimate: any failure means "not this input")
                # Not this network's input (a shape or type error), or a network the FLOP
                # counter cannot follow (StyleGAN's synthesis trips its module tracker with an
                # AssertionError): try the next kind of input, else count nothing for it.
                continue
            total += counter.get_total_flops()
            break
        net.train(was_training)
    return total * batch_size


def needs_double_backward(loss: Any) -> bool:
    """Gradient penalties differentiate through a gradient, which torch.compile cannot."""
    names = {getattr(loss, "name", ""), getattr(getattr(loss, "base", None), "name", "")}
    names |= {getattr(r, "name", "") for r in getattr(loss, "regularizers", ()) or ()}
    text = " ".join(str(n) for n in names)
    return "gp" in text or "r1" in text or "penalty" in text


def choose(options: dict[str, Any], device: torch.device, models: Models, loss: Any,
           data: list[DataSource]) -> Runtime:
    """Resolves every `auto` fast-path option for this job on `device`."""
    cuda = device.type == "cuda"
    conv = is_convolutional(models)
    native_bf16 = not cuda and conv and cpu_has_native_bf16()
    # Convolutions on hardware with fast bf16: there the step's size decides bf16 and layout.
    bf16_device = conv and (cuda or native_bf16)
    flops = step_flops(models, data, int(options["batch_size"])) if bf16_device else 0.0
    why = []
    big = flops >= (BF16_FLOPS if cuda else CPU_BF16_FLOPS)
    bf16_pays = bf16_device and big
    if cuda and conv:
        why.append(f"{'convolutional, large' if big else 'convolutional, small'} step "
                   f"(~{flops / 1e9:.0f} GFLOP forward)")
    elif cuda:
        why.append("fully connected: launch-bound")
    elif native_bf16:
        why.append(f"CPU with native bf16, convolutional {'' if big else 'but small '}step "
                   f"(~{flops / 1e9:.2g} GFLOP forward)")
    else:
        why.append("CPU: plain fp32")

    given = [f"{k} given" for k in ("precision", "channels_last", "compile", "optim_impl",
                                     "cuda_graph")
             if str(options.get(k, "auto")) != "auto"]
    why += given
    precision = options.get("precision", "auto")
    if precision == "auto":
        precision = "bf16" if bf16_pays else "fp32"
    channels_last = _flag(options.get("channels_last", "auto"))
    if channels_last is None:
        channels_last = bf16_pays
        if channels_last and not cuda and \
                instance_norm_share(models) > CPU_CHANNELS_LAST_MAX_INSTANCE_NORMS:
            channels_last = False
            why.append("default layout: InstanceNorm after most convolutions")
    graph = _flag(options.get("cuda_graph", "auto"))
    if graph and not cuda:
        raise UsageError(f"--set cuda_graph=true needs a CUDA device; this job trains on {device}")
    # `auto` never picks CUDA graphs yet: no GPU has measured them (README, Speed).
    graph = bool(graph)
    compile_ = _flag(options.get("compile", "auto"))
    if compile_ is None:
        compile_ = bool(cuda and conv and flops >= COMPILE_FLOPS and not needs_double_backward(loss)
                        and not graph)
    impl = options.get("optim_impl", "auto")
    if impl == "auto":
        impl = "fused" if cuda else "default"
    return Runtime(device=str(device), precision=precision, channels_last=channels_last,
                   compile=compile_, optim_impl=impl, why="; ".join(why), cuda_graph=graph)


def set_optimizer_impl(runtime: Runtime, models: Models) -> None:
    """Puts the chosen kernels in every param group. Called again after a checkpoint is loaded,
    since loading restores the param groups' flags of whoever wrote the checkpoint (a CUDA
    job's fused or capturable flags must not follow its checkpoint to a CPU worker)."""
    impl, graph = runtime.optim_impl, getattr(runtime, "cuda_graph", False)
    for opt in models.optimizers.values():
        for group in opt.param_groups:
            # Adam and RMSprop read these flags per group at each step; at most one of fused
            # and foreach may be on; None is torch's own choice.
            if "fused" in group:
                group["fused"] = True if impl == "fused" else None
            if "foreach" in group:
                group["foreach"] = True if impl == "foreach" else None
            if "capturable" in group:
                # A graphed step replays the optimizer's kernels: its step count must live on
                # the device, where the replay advances it.
                group["capturable"] = graph
            if group.get("fused") or group.get("capturable"):
                # Fused and capturable kernels want the step count beside the weights; a
                # checkpoint written by another implementation (a CPU job's) has it on the host.
                for p in group["params"]:
                    state = opt.state.get(p)
                    if state and isinstance(state.get("step"), torch.Tensor):
                        state["step"] = state["step"].to(device=p.device, dtype=torch.float32)
        if graph:
            # torch warns once that a capturable optimizer runs uncaptured: the warm-up steps
            # before the capture do, by design.
            opt._warned_capturable_if_run_uncaptured = True


class ChannelsLastSource(DataSource):
    """A data source whose image batches come out channels_last, to match the networks."""

    def __init__(self, inner: DataSource):
        self.inner = inner
        self.info = inner.info

    def sample(self, n: int) -> Batch:
        b = self.inner.sample(n)
        if b.x.dim() == 4:
            return Batch(b.x.contiguous(memory_format=torch.channels_last), b.y)
        return b

    def __getattr__(self, name: str) -> Any:  # anything else a variant reads (e.g. .x, .y)
        return getattr(self.inner, name)


def apply(runtime: Runtime, models: Models, data: list[DataSource]) -> list[DataSource]:
    """Puts the chosen layout, compilation and optimizer implementation in place; returns the
    data sources to train from. Parameters keep their identity (optimizers stay valid) and
    state_dict keys stay unchanged (checkpoints are interchangeable between fast paths)."""
    if runtime.channels_last:
        for net in models.nets.values():
            net.to(memory_format=torch.channels_last)
        data = [ChannelsLastSource(d) for d in data]
    set_optimizer_impl(runtime, models)
    if runtime.compile:
        for name, net in models.nets.items():
            if name.endswith("_ema"):
                continue  # used for previews only: not worth a compilation
            net.compile()
    return data
