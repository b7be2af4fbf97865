"""The base of the lecture's zoo variants: DCGAN networks for images, MLPs for vectors.

wgan, wgan-gp, lsgan, cgan and began differ from dcgan and gan in their defaults, losses or
conditioning, not in how they size their networks, so they share this base (the networks
themselves are imported from gand_plugins.dcgan and gand_plugins.gan).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from gand.api import DataInfo, Option
from gand.engine.adversarial import AdversarialVariant
from gand.errors import UsageError
from gand_plugins.dcgan import DCGAN, Discriminator, Generator, dcgan_init
from gand_plugins.gan import GAN, MLPDiscriminator, MLPGenerator


class ImageOrVector(AdversarialVariant):
    """An AdversarialVariant that trains on images (DCGAN nets) and on vectors (MLP nets)."""

    data_kinds = frozenset({"vector", "image"})
    options = {
        **DCGAN.options,
        "nz": Option(int, 0, "latent size (0: 100 for images, 10 for vectors)", min=0, max=4096),
        "hidden": GAN.options["hidden"],  # vector data only
        "layers": GAN.options["layers"],  # vector data only
    }

    @staticmethod
    def nz(info: DataInfo, options: dict[str, Any]) -> int:
        return options["nz"] or (100 if info.kind == "image" else 10)

    def data_shape(self, info: DataInfo, options):
        if info.kind != "image":
            return info.shape
        s = DCGAN._size(self, info, options)
        return (info.shape[0], s, s)

    def check_data(self, infos, options):
        super().check_data(infos, options)
        info = infos[0]
        if info.kind == "image" and info.shape[0] not in (1, 3):
            raise UsageError(f"variant {self.name} takes 1- or 3-channel images; {info.spec} has "
                             f"{info.shape[0]}")

    def d_mixes_batch(self, infos, options):
        # The vector MLPs have no normalisation; only the DCGAN D for images can use BatchNorm.
        return super().d_mixes_batch(infos, options) if infos[0].kind == "image" else None

    def build(self, infos, options, device):
        # The latent size is settled here so that it is recorded in the models' extras.
        return super().build(infos, {**options, "nz": self.nz(infos[0], options)}, device)

    def image_networks(self, info: DataInfo, options, nz: int, d_in: int) -> tuple[nn.Module, nn.Module]:
        """DCGAN's G (latent of size nz) and D (d_in input channels), initialised as in DCGAN."""
        c, s, _ = self.data_shape(info, options)
        G = Generator(nz, options["ngf"], c, s)
        D = Discriminator(options["ndf"], d_in, s, options["d_norm"])
        G.apply(dcgan_init)
        D.apply(dcgan_init)
        return G, D

    def vector_networks(self, info: DataInfo, options, nz: int, d_extra: int = 0):
        """The gan variant's MLPs: G from nz inputs, D on the data plus d_extra inputs."""
        G = MLPGenerator(nz, options["hidden"], options["layers"], info.shape, False)
        D = MLPDiscriminator(options["hidden"], options["layers"], (info.shape[0] + d_extra,))
        return G, D

    def networks(self, info: DataInfo, options):
        nz = self.nz(info, options)
        if info.kind == "image":
            return self.image_networks(info, options, nz, info.shape[0])
        return self.vector_networks(info, options, nz)
