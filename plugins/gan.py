"""`gan`: the lecture's fully connected GAN, for vector data (and flattened images)."""
from __future__ import annotations

import math

import torch
from torch import nn

from gand.api import DataInfo, Option, SupportsADA, SupportsDTricks
from gand.engine.adversarial import AdversarialVariant
from gand.errors import UsageError
from gand.hookspecs import hookimpl


def mlp(inp: int, hidden: int, out: int, layers: int, act: nn.Module) -> nn.Sequential:
    dims = [inp] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        mods += [nn.Linear(a, b), act]
    mods.append(nn.Linear(dims[-1], out))
    return nn.Sequential(*mods)


class MLPGenerator(nn.Module):
    """z → sample; with `components` k > 0, a mixture of k generators sharing all but the
    first layer's bias (MGAN, Hoang et al. ICLR 2018; DeLiGAN, Gurumurthy et al. CVPR 2017).

    Why: a continuous G maps the connected Gaussian prior onto a connected set, so between two
    disconnected modes it must leave a trail of samples, the misses that keep high quality
    under 98% on ring8 (docs/quality.md). A discrete code lets G jump from mode to mode. The
    code is read from the prior itself, component = ⌊k·Φ(z₀)⌋, so every component is drawn
    with probability exactly 1/k, z stays N(0, I) for the engine (sampling, interpolation,
    truncation) and no new input crosses the variant's interface.
    """

    SPREAD = 0.1  # the scale of the continuous latent in a mixture (see forward)

    def __init__(self, nz: int, hidden: int, layers: int, shape: tuple[int, ...], image: bool,
                 components: int = 0):
        super().__init__()
        self.shape = shape
        self.components = components
        self.net = mlp(nz - (1 if components else 0), hidden, math.prod(shape), layers,
                       nn.ReLU())
        if components:
            # One learned offset of the first layer per component, drawn at random so that
            # the components start apart (from zero they stay one generator: 96% high quality
            # on ring8, against 100% from N(0, 1); docs/quality.md).
            self.offsets = nn.Embedding(components, hidden)
            nn.init.normal_(self.offsets.weight)
        self.out = nn.Tanh() if image else nn.Identity()  # images live in [-1, 1]

    def component(self, z: torch.Tensor) -> torch.Tensor:
        """Which generator of the mixture draws each latent: ⌊k·Φ(z₀)⌋, uniform over k."""
        u = 0.5 * (1 + torch.erf(z[:, 0] / math.sqrt(2)))
        return (u * self.components).long().clamp_(0, self.components - 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.components:
            return self.out(self.net(z)).view(z.shape[0], *self.shape)
        first, rest = self.net[0], self.net[1:]
        # The continuous part enters at a tenth of its scale: each component starts as a tight
        # blob that grows to its mode's width, rather than a sheet that must fold between two
        # modes (at full scale grid25 kept trails along the grid lines).
        h = first(z[:, 1:] * self.SPREAD) + self.offsets(self.component(z))
        return self.out(rest(h)).view(z.shape[0], *self.shape)


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
        "components": Option(int, 0, "generators in G's mixture (0: one plain G); they share "
                                     "all but the first layer's bias (MGAN, Hoang et al. 2018), "
                                     "so G can jump between disconnected modes",
                             min=0, max=4096),
        "d_norm": Option(str, "none", "normalisation in D: none, or spectral (spectral norm "
                                      "on every layer, Miyato et al. 2018)",
                         choices=("none", "spectral")),
    }
    # The lecture's 1-D GAN trains with Adam at 1e-3; small batches are cheap for vectors.
    defaults = {"lr": 1e-3, "batch_size": 256}
    # gand's recipes for the mode-collapse benchmarks (docs/quality.md has the numbers and the
    # sweeps behind them): a mixture of generators (no trail of samples between modes), a
    # faster Adam, an EMA of G to sample from (precision), PacGAN packing (balance between
    # modes, the KL), and a linear lr decay at the end (precision). `--preset lecture` gives
    # the lecture's recipe instead; --set overrides either.
    RECIPES = {
        "ring8": {"components": 32, "lr": 2e-3, "ema": 0.999, "pack": 2, "lr_decay": 0.5,
                  "batch_size": 2048, "steps": 6000},
        # No packing on grid25: a packed D pushes a mode's extra component off it, where it
        # stays, stranded, just outside the mode; 4 components a mode (not 3) make one extra
        # or missing component a smaller imbalance (docs/quality.md).
        "grid25": {"components": 100, "lr": 2e-3, "ema": 0.999, "pack": 1, "layers": 3,
                   "lr_decay": 0.75, "batch_size": 512, "steps": 20000},
    }

    def check_data(self, infos, options):
        super().check_data(infos, options)
        if options["components"] and options["nz"] < 2:
            # z₀ picks the component; the rest of z is the continuous latent.
            raise UsageError(f"components={options['components']} needs nz of at least 2 (the "
                             f"first latent picks the component); got nz={options['nz']}")

    def data_defaults(self, infos):
        return dict(self.RECIPES.get(infos[0].spec, {}))

    def networks(self, info: DataInfo, options):
        image = info.kind == "image"
        # .get: a job recorded before the option existed has one plain G.
        G = MLPGenerator(options["nz"], options["hidden"], options["layers"], info.shape, image,
                         options.get("components", 0))
        D = MLPDiscriminator(options["hidden"], options["layers"], info.shape)
        return G, D


@hookimpl
def gand_register_variants():
    return [GAN]
