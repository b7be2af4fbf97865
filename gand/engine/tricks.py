"""Tricks against mode collapse that change what the discriminator sees, for every variant
built on the shared adversarial step (gand.engine.adversarial).

- `pack=m` — PacGAN (Lin et al., NeurIPS 2018): D judges m samples at once, concatenated along
  the feature (vectors) or channel (images) axis, so a generator that repeats itself is easy to
  spot. D's first layer is rebuilt m times as wide; G is unchanged; the batch must divide by m.
- `mbstd=g` — minibatch standard deviation (Karras et al., ICLR 2018, ProGAN; kept in
  StyleGAN): before D's last layer, one extra feature/channel holding the standard deviation of
  the features across groups of g examples, averaged to one number per group. A collapsed
  batch has a tell-tale small value.
- `d_norm=spectral` — spectral normalisation (Miyato et al., ICLR 2018): every linear and
  convolutional weight of D divided by its largest singular value (one power iteration per
  forward pass), which bounds D's Lipschitz constant.
- `instance_noise=σ` — instance noise (Sønderby et al. 2017; Arjovsky & Bottou 2017): Gaussian
  noise of std σ added to every input of D, annealed linearly to 0 over the run, so the real and
  fake distributions overlap early on and D's gradient stays informative.

`wrap_d` applies the first three to a freshly built D by replacing its first and last layers
(so each variant's `networks()` stays as it was); `noisy` applies the last to D's inputs.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from gand.api import Option

OPTIONS: dict[str, Option] = {
    "pack": Option(int, 1, "PacGAN: D judges this many samples at once (1: off; the batch "
                           "must divide by it)", min=1, max=64),
    "mbstd": Option(int, 0, "minibatch-std group size, an extra feature before D's last layer "
                            "(0: off; StyleGAN: 4)", min=0, max=4096),
    "instance_noise": Option(float, 0.0, "std of Gaussian noise on every input of D, annealed "
                                         "to 0 over the run (0: off)", min=0.0),
}

# The trick options that only a D built and called by the shared step honours.
D_TRICKS = ("pack", "mbstd", "instance_noise")

LAYERS = (nn.Linear, nn.Conv2d)


def _layers(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, layer) for every Linear/Conv2d in forward-definition order."""
    out = []
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, LAYERS):
                out.append((parent, name, child))
    return out


def _wider(layer: nn.Module, factor: int = 1, extra: int = 0) -> nn.Module:
    """A fresh copy of `layer` taking factor·in + extra inputs, its weights drawn with the same
    mean and std as the layer it replaces (DCGAN's N(0, 0.02) stays N(0, 0.02))."""
    w = (layer.parametrizations.weight.original if parametrize.is_parametrized(layer, "weight")
         else layer.weight).detach()
    if isinstance(layer, nn.Linear):
        new: nn.Module = nn.Linear(layer.in_features * factor + extra, layer.out_features,
                                   bias=layer.bias is not None)
    else:
        new = nn.Conv2d(layer.in_channels * factor + extra, layer.out_channels,
                        layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                        layer.groups, bias=layer.bias is not None, padding_mode=layer.padding_mode)
    with torch.no_grad():
        new.weight.normal_(float(w.mean()), float(w.std()) if w.numel() > 1 else 0.02)
        if layer.bias is not None:
            new.bias.copy_(torch.full_like(new.bias, float(layer.bias.detach().mean())))
    return new.to(w.device, w.dtype)


def minibatch_std(x: torch.Tensor, group: int) -> torch.Tensor:
    """One value per example: the std across its group of examples, averaged over features.

    Groups are consecutive examples; the group shrinks to the largest divisor of the batch
    that is at most `group`, so any batch size works (submit checks the training batch)."""
    n = x.shape[0]
    g = max(1, min(group, n))
    while n % g:
        g -= 1
    y = x.float().reshape(g, n // g, -1)                 # [group member, group, features]
    # The variance written out: torch's var over dim 0 is about 7 times slower on the CPU
    # (forward and backward), which made mbstd double the time of a ring8 run.
    d = y - y.mean(0)
    std = ((d * d).mean(0) + 1e-8).sqrt()                # [group, features]
    value = std.mean(1)                                  # [group]
    return value.repeat(g).to(x.dtype)                   # example i is in group i % (n // g)


class MinibatchStd(nn.Module):
    """`layer` fed its input plus one minibatch-std feature (or channel, for images)."""

    def __init__(self, layer: nn.Module, group: int):
        super().__init__()
        self.layer = layer
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = minibatch_std(x, self.group)
        shape = (x.shape[0], 1) + tuple(x.shape[2:])
        return self.layer(torch.cat([x, s.view(-1, *([1] * (x.dim() - 1))).expand(shape)], 1))


class Packed(nn.Module):
    """D on packs: m consecutive examples concatenated along dim 1 become one input."""

    def __init__(self, d: nn.Module, m: int):
        super().__init__()
        self.d = d
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n % self.m:
            raise ValueError(f"a packed D (pack={self.m}) needs a batch divisible by "
                             f"{self.m}; got {n}")
        # [n, C, …] → [n/m, m·C, …]: the m examples of a pack sit side by side as channels.
        return self.d(x.reshape(n // self.m, self.m * x.shape[1], *x.shape[2:]))


def spectral(module: nn.Module) -> nn.Module:
    """Spectral norm on every Linear/Conv2d of module that does not have it already."""
    for parent, name, layer in _layers(module):
        if not parametrize.is_parametrized(layer, "weight"):
            setattr(parent, name, spectral_norm(layer))
    return module


def wrap_d(D: nn.Module, options: dict[str, Any]) -> nn.Module:
    """D with the tricks the options ask for: pack → D(…, mbstd before its last layer)."""
    pack, group = int(options.get("pack", 1)), int(options.get("mbstd", 0))
    # A D that came with spectral norm (sagan) gets it back on the layers replaced here.
    had_spectral = any(parametrize.is_parametrized(m, "weight") for m in D.modules())
    if pack > 1 or group > 0:
        layers = _layers(D)
        if not layers:
            raise ValueError("pack and mbstd need a D with Linear or Conv2d layers")
        if group > 0:
            parent, name, last = layers[-1]
            setattr(parent, name, MinibatchStd(_wider(last, extra=1), group))
        if pack > 1:
            parent, name, first = _layers(D)[0]
            setattr(parent, name, _wider(first, factor=pack))
    if options.get("d_norm") == "spectral" or had_spectral:
        spectral(D)
    return Packed(D, pack) if pack > 1 else D


def noise_std(options: dict[str, Any], step: int, total: int) -> float:
    """Instance noise's std at generator step `step` (1-based) of `total`: σ, linearly to 0."""
    sigma = float(options.get("instance_noise", 0.0))
    if sigma <= 0 or total <= 0:
        return 0.0
    return sigma * max(0.0, 1.0 - (step - 1) / total)


def noisy(x: torch.Tensor, std: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """x plus N(0, std²) noise (x itself when std is 0)."""
    if std <= 0:
        return x
    return x + std * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
