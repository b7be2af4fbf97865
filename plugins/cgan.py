"""`cgan`: a GAN conditioned on class labels (mnist, or an image folder's class subfolders).

Images: a conditional DCGAN, the label's embedding concatenated to z in G and a learned map
per class as an extra input channel of D. Vectors: the gan MLPs with label embeddings beside
z and x.
`gand generate JOB --label K` draws class K.
"""
from __future__ import annotations

import torch
from torch import nn

from gand.api import DataInfo, Option, SupportsADA, SupportsDTricks
from gand.hookspecs import hookimpl
from gand_plugins.zoo import ImageOrVector


class ConditionalGenerator(nn.Module):
    def __init__(self, body: nn.Module, num_classes: int, n_embed: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, n_embed)
        self.body = body

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([z, self.embed(y)], 1))


class ConditionalDiscriminator(nn.Module):
    """D(x, y): the label's embedding as one extra image channel (images) or extra inputs."""

    def __init__(self, body: nn.Module, num_classes: int, shape: tuple[int, ...], n_embed: int):
        super().__init__()
        self.image = len(shape) == 3
        self.shape = shape
        # Images: a learned H×W map per class, so D can tie the label to where strokes are.
        self.embed = nn.Embedding(num_classes, shape[1] * shape[2] if self.image else n_embed)
        self.body = body

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        e = self.embed(y)
        if self.image:
            return self.body(torch.cat([x, e.view(-1, 1, *self.shape[1:])], 1))
        return self.body(torch.cat([x.flatten(1), e], 1))


class CGAN(ImageOrVector, SupportsADA, SupportsDTricks):
    name = "cgan"
    help = "conditional GAN on class labels; gand generate --label K draws class K"
    needs_labels = True
    options = {**ImageOrVector.options,
               "n_embed": Option(int, 10, "size of the label embedding", min=1, max=1024)}

    def networks(self, info: DataInfo, options):
        nz, ne, k = self.nz(info, options), options["n_embed"], info.num_classes
        if info.kind == "image":
            G, D = self.image_networks(info, options, nz + ne, info.shape[0] + 1)
            shape = self.data_shape(info, options)
        else:
            G, D = self.vector_networks(info, options, nz + ne, ne)
            shape = info.shape
        return ConditionalGenerator(G, k, ne), ConditionalDiscriminator(D, k, shape, ne)


@hookimpl
def gand_register_variants():
    return [CGAN]
