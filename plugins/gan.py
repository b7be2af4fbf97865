"""`gan`: the lecture's fully connected GAN, for vector data (and flattened images)."""
from __future__ import annotations

import math

import torch
from torch import nn

from gand.api import DataInfo, Option, SupportsADA, SupportsDTricks
from gand.engine.adversarial import AdversarialVariant
from gand.hookspecs import hookimpl


def mlp(inp: int, hidden: int, out: int, layers: int, act: nn.Module) -> nn.Sequential:
    dims = [inp] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        mods += [nn.Linear(a, b), act]
    mods.append(nn.Linear(dims[-1], out))
    return nn.Sequential(*mods)


class MLPGenerator(nn.Module):
    def __init__(self, nz: int, hidden: int, layers: int, shape: tuple[int, ...], image: bool):
        super().__init__()
        self.shape = shape
        self.net = mlp(nz, hidden, math.prod(shape), layers, nn.ReLU())
        self.out = nn.Tanh() if image else nn.Identity()  # images live in [-1, 1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(z)).view(z.shape[0], *self.shape)


class MLPDiscriminator(nn.Module):
    """Ends in a logit: the sigmoid lives inside the loss (BCE with logits)."""

    def __init__(self, hidden: int, layers: int, shape: tuple[int, ...]):
        super().__init__()
        self.net = mlp(math.prod(shape), hidden, 1, layers, nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class GAN(AdversarialVariant, SupportsADA, SupportsDTricks):
    name = "gan"
    help = "fully connected GAN (the lecture's 1-D GAN); vector data and flattened images"
    options = {
        "nz": Option(int, 10, "latent size (the lecture's noise_dim)", min=1, max=4096),
        "hidden": Option(int, 128, "hidden units per layer (the lecture's 1-D example: 50)",
                         min=1, max=8192),
        "layers": Option(int, 2, "hidden layers in G and D", min=1, max=16),
        "d_norm": Option(str, "none", "normalisation in D: none, or spectral (spectral norm "
                                      "on every layer, Miyato et al. 2018)",
                         choices=("none", "spectral")),
    }
    # The lecture's 1-D GAN trains with Adam at 1e-3; small batches are cheap for vectors.
    defaults = {"lr": 1e-3, "batch_size": 256}
    # gand's recipes for the mode-collapse benchmarks (docs/quality.md has the numbers and the
    # sweeps behind them): a faster Adam, an EMA of G to sample from (precision), PacGAN
    # packing (balance between modes, the KL), and a linear lr decay at the end (precision).
    # `--preset lecture` gives the lecture's recipe instead; --set overrides either.
    RECIPES = {
        "ring8": {"lr": 2e-3, "ema": 0.999, "pack": 2, "lr_decay": 0.5, "batch_size": 2048,
                  "steps": 6000},
        "grid25": {"lr": 2e-3, "ema": 0.999, "pack": 2, "layers": 3, "lr_decay": 0.5,
                   "batch_size": 512, "steps": 8000},
    }

    def data_defaults(self, infos):
        return dict(self.RECIPES.get(infos[0].spec, {}))

    def networks(self, info: DataInfo, options):
        image = info.kind == "image"
        G = MLPGenerator(options["nz"], options["hidden"], options["layers"], info.shape, image)
        D = MLPDiscriminator(options["hidden"], options["layers"], info.shape)
        return G, D


@hookimpl
def gand_register_variants():
    return [GAN]
