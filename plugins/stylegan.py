"""`stylegan`: the lecture's simplified StyleGAN, with the parts the lecture leaves out.

A mapping network turns z into a style vector w; a learned constant 4×4 input is upsampled to
the data's resolution, with AdaIN (instance norm, then a per-channel scale and bias computed
from w) after every convolution and optional per-pixel noise before it. Training mixes two
latents' styles at a random crossover layer with probability `mixing_prob`, and keeps a running
mean of w (`w_avg`, in models.extras, so checkpoints carry it) for the truncation trick.

The lecture's sketch never defines `w_avg` and leaves `style_mixing` empty; both are real here:
`sample(..., truncation=psi)` and `style_mixing_grid(...)`.
"""
from __future__ import annotations

import math
import random
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from gand.api import (DataInfo, Models, Option, StepContext, StyleMixing, SupportsADA,
                      SupportsDTricks, Truncation)
from gand.engine.adversarial import AdversarialVariant
from gand.errors import UsageError
from gand.hookspecs import hookimpl
from gand_plugins.dcgan import Discriminator, SquareImages

SIZES = (8, 16, 32, 64, 128)
MIN_CHANNELS = 8  # the narrowest layer at high resolutions, whatever `channels` says


def normalize_latent(z: torch.Tensor) -> torch.Tensor:
    """z scaled to unit RMS per example (StyleGAN's pixel norm).

    The lecture divides by the norm, which leaves each entry at ~1/sqrt(z_dim): the first
    layer then sees inputs 20× smaller than its initialisation expects. Unit RMS does not.
    """
    return z * torch.rsqrt(z.float().pow(2).mean(dim=1, keepdim=True) + 1e-8).to(z.dtype)


class MappingNetwork(nn.Module):
    """z → w: `layers` fully connected layers with LeakyReLU after a normalisation of z."""

    def __init__(self, z_dim: int, w_dim: int, layers: int):
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            lin = nn.Linear(z_dim if i == 0 else w_dim, w_dim)
            # He init for LeakyReLU keeps w's scale through 8 layers (torch's default shrinks it).
            nn.init.kaiming_normal_(lin.weight, a=0.2)
            nn.init.zeros_(lin.bias)
            mods += [lin, nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(normalize_latent(z))


class AdaIN(nn.Module):
    """Adaptive instance norm: each channel normalised, then scaled and shifted by w's style."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.channels = channels
        self.style = nn.Linear(w_dim, 2 * channels)
        # Scale starts around 1 and bias around 0, so a fresh network passes activations through.
        nn.init.normal_(self.style.weight, 0.0, 1.0 / math.sqrt(w_dim) * 0.2)
        with torch.no_grad():
            self.style.bias[:channels].fill_(1.0)
            self.style.bias[channels:].zero_()

    def scale_bias(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel (scale, bias) that w asks for, each of shape (N, C)."""
        s = self.style(w)
        return s[:, :self.channels], s[:, self.channels:]

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, bias = self.scale_bias(w)
        return scale[:, :, None, None] * F.instance_norm(x) + bias[:, :, None, None]


class NoiseInput(nn.Module):
    """Per-pixel Gaussian noise with a learned per-channel strength (starting at 0)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device,
                            generator=generator).to(x.dtype)
        return x + self.weight * noise


class StyleLayer(nn.Module):
    """conv 3×3 → noise → LeakyReLU → AdaIN: one style input."""

    def __init__(self, cin: int, cout: int, w_dim: int, noise: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.noise = NoiseInput(cout) if noise else None
        self.adain = AdaIN(cout, w_dim)

    def forward(self, x, w, noise: bool = True, generator=None):
        x = self.conv(x)
        if self.noise is not None and noise:
            x = self.noise(x, generator)
        return self.adain(F.leaky_relu(x, 0.2), w)


def level_channels(channels: int, levels: int) -> list[int]:
    """Widths from 4×4 upwards: halved at each doubling as in the lecture, never below 8."""
    return [max(min(channels, MIN_CHANNELS), channels // 2 ** i) for i in range(levels)]


class Synthesis(nn.Module):
    """The learned 4×4 constant grown to `size`, two style layers per resolution, then ToRGB."""

    def __init__(self, w_dim: int, channels: int, out_channels: int, size: int, noise: bool):
        super().__init__()
        levels = int(math.log2(size)) - 1  # 4, 8, ..., size
        chs = level_channels(channels, levels)
        self.const = nn.Parameter(torch.randn(1, chs[0], 4, 4))
        self.layers = nn.ModuleList()
        for i, c in enumerate(chs):
            cin = chs[0] if i == 0 else chs[i - 1]
            self.layers.append(StyleLayer(cin, c, w_dim, noise))
            self.layers.append(StyleLayer(c, c, w_dim, noise))
        self.to_rgb = nn.Conv2d(chs[-1], out_channels, 1)

    @property
    def num_ws(self) -> int:
        """How many style inputs there are (two per resolution), coarse first."""
        return len(self.layers)

    def forward(self, ws: torch.Tensor, noise: bool = True,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if ws.dim() == 2:  # one w for every layer
            ws = ws.unsqueeze(1).expand(-1, self.num_ws, -1)
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        for i, layer in enumerate(self.layers):
            if i and i % 2 == 0:  # each resolution after the first starts with an upsampling
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = layer(x, ws[:, i], noise, generator)
        return torch.tanh(self.to_rgb(x))


class Generator(nn.Module):
    """mapping + synthesis; calling it with z uses one w for every layer."""

    def __init__(self, z_dim, w_dim, mapping_layers, channels, out_channels, size, noise):
        super().__init__()
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers)
        self.synthesis = Synthesis(w_dim, channels, out_channels, size, noise)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.mapping(z))


def truncate(w: torch.Tensor, w_avg: torch.Tensor, psi: float) -> torch.Tensor:
    """The truncation trick: w pulled toward the mean style, w_avg + psi·(w − w_avg)."""
    return w_avg.to(w.dtype) + psi * (w - w_avg.to(w.dtype))


def _generator(models: Models) -> nn.Module:
    return models.nets.get("G_ema", models.G)


def default_crossover(num_ws: int) -> int:
    """Where coarse styles end: the 4×4 and 8×8 layers, or half the layers when fewer."""
    return min(4, num_ws // 2)


@torch.no_grad()
def style_mixing_grid(models: Models, rows: int, cols: Optional[int] = None,
                      generator: Optional[torch.Generator] = None,
                      crossover: Optional[int] = None,
                      truncation: Optional[float] = None) -> torch.Tensor:
    """The StyleGAN style-mixing figure as (rows+1)·(cols+1) images in [-1, 1], row-major.

    Row 0 holds a blank corner and the `cols` column sources; each later row starts with its
    row source, followed by images whose coarse styles (layers before `crossover`, by default
    the 4×4 and 8×8 ones) come from the row's latent and whose fine styles come from the
    column's latent. Save it with nrow = cols + 1. Noise inputs are off, so every difference
    in the picture comes from the styles. `cols` defaults to `rows` (a square figure).
    """
    cols = rows if cols is None else cols
    if rows < 1 or cols < 1:
        raise UsageError(f"style mixing grid needs at least 1 row and 1 column; got {rows}×{cols}")
    G = _generator(models)
    was = G.training
    G.eval()
    dev = next(G.parameters()).device
    L = G.synthesis.num_ws
    cut = default_crossover(L) if crossover is None else int(crossover)
    if not 1 <= cut < L:
        raise UsageError(f"crossover {cut} is invalid; expected 1 to {L - 1} "
                         f"(this generator has {L} style layers)")
    z_dim = models.extras["nz"]
    # Latents come from the generator's device (a CPU generator works with a GPU model too).
    where = generator.device if generator is not None else dev
    w_row = G.mapping(torch.randn(rows, z_dim, device=where, generator=generator).to(dev))
    w_col = G.mapping(torch.randn(cols, z_dim, device=where, generator=generator).to(dev))
    if truncation is not None:
        w_row = truncate(w_row, models.extras["w_avg"], truncation)
        w_col = truncate(w_col, models.extras["w_avg"], truncation)
    row_img = G.synthesis(w_row, noise=False)
    col_img = G.synthesis(w_col, noise=False)
    ws = w_col.unsqueeze(0).unsqueeze(2).repeat(rows, 1, L, 1)       # (rows, cols, L, w_dim)
    ws[:, :, :cut] = w_row[:, None, None, :]                           # coarse from the row
    mixed = G.synthesis(ws.flatten(0, 1), noise=False).view(rows, cols, *row_img.shape[1:])
    blank = torch.ones_like(row_img[:1])                               # white corner
    out = [torch.cat([blank, col_img])]
    for r in range(rows):
        out.append(torch.cat([row_img[r:r + 1], mixed[r]]))
    G.train(was)
    return torch.cat(out).float()


class StyleGAN(SquareImages, AdversarialVariant, SupportsADA, SupportsDTricks, StyleMixing,
               Truncation):
    name = "stylegan"
    help = ("StyleGAN (simplified, as in the lecture): mapping network, constant input, AdaIN, "
            "noise, style mixing, w_avg and truncation; 8 to 128 px (28 px trains at 32)")
    data_kinds = frozenset({"image"})
    # StyleGAN's own objective: non-saturating logistic loss with R1 on real images.
    default_loss = "bce+r1"
    options = {
        "z_dim": Option(int, 512, "latent size", min=1, max=4096),
        "w_dim": Option(int, 512, "style vector size", min=1, max=4096),
        "mapping_layers": Option(int, 8, "layers in the mapping network", min=1, max=16),
        "channels": Option(int, 512, "width at 4×4 (halved at each doubling, at least 8)",
                           min=1, max=1024),
        "noise": Option(bool, True, "per-pixel noise inputs"),
        "mixing_prob": Option(float, 0.9, "probability of style mixing in a training batch",
                              min=0.0, max=1.0),
        "w_avg_decay": Option(float, 0.995, "decay of the running mean of w", min=0.0, max=1.0),
        "ndf": Option(int, 64, "discriminator width", min=1, max=1024),
        "d_norm": Option(str, "none", "normalisation in D (none suits R1; spectral: "
                                      "spectral norm, Miyato et al. 2018)",
                         choices=("batch", "instance", "none", "spectral")),
        "image_size": Option(int, 0, "train at this size (0: from the data; 28 px → 32)",
                             choices=(0,) + SIZES),
    }

    def __init__(self) -> None:
        # Set only inside train_step: (w_avg, mixing probability, decay).
        self._training: Optional[tuple[torch.Tensor, float, float]] = None

    # -- data and networks -----------------------------------------------------------------

    def _size(self, info: DataInfo, options) -> int:
        if options["image_size"]:
            return options["image_size"]
        side = max(info.shape[1], info.shape[2])
        # The smallest supported size that holds the image (28 → 32), else the largest.
        return next((s for s in SIZES if s >= side), SIZES[-1])


    def networks(self, info: DataInfo, options):
        c, s, _ = self.data_shape(info, options)
        G = Generator(options["z_dim"], options["w_dim"], options["mapping_layers"],
                      options["channels"], c, s, options["noise"])
        D = Discriminator(options["ndf"], c, s, options["d_norm"])
        return G, D

    def build(self, infos, options, device) -> Models:
        # The shared builder reads the latent size from "nz"; StyleGAN calls it z_dim.
        models = super().build(infos, {**options, "nz": options["z_dim"]}, device)
        # Zeros until training moves it: a tensor, so a resume copies the saved one in place.
        models.extras["w_avg"] = torch.zeros(options["w_dim"], device=device)
        return models

    # -- training --------------------------------------------------------------------------

    def train_step(self, models: Models, loss, ctx: StepContext) -> dict[str, torch.Tensor]:
        self._training = (models.extras["w_avg"], ctx.options["mixing_prob"],
                          ctx.options["w_avg_decay"])
        try:
            return super().train_step(models, loss, ctx)
        finally:
            self._training = None

    def generate_from(self, G: nn.Module, z: torch.Tensor, y) -> torch.Tensor:
        if self._training is None or not G.training:
            return G(z)
        w_avg, mixing_prob, decay = self._training
        w = G.mapping(z)
        L = G.synthesis.num_ws
        ws = w.unsqueeze(1).repeat(1, L, 1)
        # Style mixing regularisation: layers from a random crossover on take a second latent's
        # style, so no layer can rely on its neighbours sharing one w. Python's RNG draws the
        # coin and the crossover (checkpointed; no device sync).
        if mixing_prob > 0 and L > 1 and random.random() < mixing_prob:
            cut = random.randrange(1, L)
            ws[:, cut:] = G.mapping(torch.randn_like(z)).unsqueeze(1)
        with torch.no_grad():
            w_avg.lerp_(w.detach().float().mean(0), 1.0 - decay)
        return G.synthesis(ws)

    # -- generation ------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, models: Models, n: int, *, generator: Optional[torch.Generator] = None,
               truncation: Optional[float] = None, noise: bool = True, **_: Any) -> torch.Tensor:
        """n images; `truncation` psi pulls w toward w_avg (1: off, 0: every image the mean)."""
        if truncation is not None and not math.isfinite(truncation):
            raise UsageError(f"--truncation {truncation} is invalid; expected a number such as 0.7")
        G = _generator(models)
        was = G.training
        G.eval()
        dev = next(G.parameters()).device
        w = G.mapping(self.latent(models, n, dev, generator))
        if truncation is not None:
            w = truncate(w, models.extras["w_avg"], truncation)
        out = G.synthesis(w, noise=noise, generator=generator).float()
        G.train(was)
        return out

    def style_mixing_grid(self, models: Models, rows: int, cols: Optional[int] = None,
                          generator: Optional[torch.Generator] = None,
                          crossover: Optional[int] = None,
                          truncation: Optional[float] = None) -> torch.Tensor:
        """See the module function `style_mixing_grid`; here so the CLI needs no import."""
        return style_mixing_grid(models, rows, cols, generator, crossover, truncation)


@hookimpl
def gand_register_variants():
    return [StyleGAN]
