"""`dcgan`: the lecture's convolutional GANs, sized from the data.

28×28 data gets the lecture's MNIST DCGAN (7×7 → 14×14 → 28×28); 32, 64 and 128 px get the
DCGAN of section 3, with one stride-2 transposed convolution per doubling from 4×4. Channels
(1 or 3) come from the data.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gand.api import DataInfo, Option, SupportsADA, SupportsDTricks
from gand.engine.adversarial import AdversarialVariant
from gand.errors import UsageError
from gand.hookspecs import hookimpl

SIZES = (28, 32, 64, 128)


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    # none, and spectral (gand.engine.tricks norms every weight of D instead); critics with a
    # gradient penalty must not mix examples in a batch.
    return nn.Identity()


class Generator(nn.Module):
    def __init__(self, nz: int, ngf: int, channels: int, size: int):
        super().__init__()
        if size == 28:
            layers = [nn.ConvTranspose2d(nz, ngf * 2, 7, 1, 0), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
                      nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1), nn.BatchNorm2d(ngf), nn.ReLU(True),
                      nn.ConvTranspose2d(ngf, channels, 4, 2, 1)]
        else:
            ups = int(math.log2(size)) - 2  # doublings after the 4×4 start
            ch = ngf * 2 ** (ups - 1)
            layers = [nn.ConvTranspose2d(nz, ch, 4, 1, 0, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True)]
            for _ in range(ups - 1):
                layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                           nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
                ch //= 2
            layers.append(nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False))
        self.net = nn.Sequential(*layers, nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], z.shape[1], 1, 1))


class Discriminator(nn.Module):
    """Ends in one raw score per image: a logit for BCE, a critic value for Wasserstein."""

    def __init__(self, ndf: int, channels: int, size: int, norm: str):
        super().__init__()
        act = nn.LeakyReLU(0.2, True)
        if size == 28:
            layers = [nn.Conv2d(channels, ndf, 4, 2, 1), act,
                      nn.Conv2d(ndf, ndf * 2, 4, 2, 1), _norm2d(norm, ndf * 2), act,
                      nn.Conv2d(ndf * 2, 1, 7, 1, 0)]
        else:
            downs = int(math.log2(size)) - 2
            layers = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), act]
            ch = ndf
            for _ in range(downs - 1):
                layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), _norm2d(norm, ch * 2), act]
                ch *= 2
            layers.append(nn.Conv2d(ch, 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) convolutions, N(1, 0.02) norm scales."""
    name = type(module).__name__
    if "Conv" in name:
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif "Norm" in name and getattr(module, "weight", None) is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class SquareImages:
    """Mixin for variants that train on square 1- or 3-channel images of a size they choose."""

    name: str

    def _size(self, info: DataInfo, options) -> int:
        raise NotImplementedError

    def data_shape(self, info: DataInfo, options):
        s = self._size(info, options)
        return (info.shape[0], s, s)

    def check_data(self, infos, options):
        super().check_data(infos, options)
        if infos[0].shape[0] not in (1, 3):
            raise UsageError(f"variant {self.name} takes 1- or 3-channel images; {infos[0].spec} "
                             f"has {infos[0].shape[0]}")


class DCGAN(SquareImages, AdversarialVariant, SupportsADA, SupportsDTricks):
    name = "dcgan"
    help = "convolutional GAN: the lecture's MNIST DCGAN at 28 px, DCGAN at 32/64/128 px"
    data_kinds = frozenset({"image"})
    options = {
        "nz": Option(int, 100, "latent size", min=1, max=4096),
        "ngf": Option(int, 64, "generator width", min=1, max=1024),
        "ndf": Option(int, 64, "discriminator width", min=1, max=1024),
        "image_size": Option(int, 0, "train at this size (0: the data's own size)",
                             choices=(0,) + SIZES),
        "d_norm": Option(str, "batch", "normalisation in D (spectral: spectral norm on every "
                                       "layer, Miyato et al. 2018)",
                         choices=("batch", "instance", "none", "spectral")),
    }

    def _size(self, info: DataInfo, options) -> int:
        if options["image_size"]:
            return options["image_size"]
        h, w = info.shape[1], info.shape[2]
        # A folder of other sizes trains at the nearest supported size (resized and cropped).
        return min(SIZES, key=lambda s: abs(s - max(h, w)))


    def networks(self, info: DataInfo, options):
        c, s, _ = self.data_shape(info, options)
        G = Generator(options["nz"], options["ngf"], c, s)
        D = Discriminator(options["ndf"], c, s, options["d_norm"])
        G.apply(dcgan_init)
        D.apply(dcgan_init)
        return G, D


@hookimpl
def gand_register_variants():
    return [DCGAN]
