"""`sagan`: self-attention GAN: DCGAN networks with spectral norm everywhere and a
self-attention block at a middle resolution of G and of D, trained with the hinge loss and
separate learning rates (TTUR: D 4e-4, G 1e-4, Adam(0, 0.9)) as in Zhang et al.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gand.api import SupportsADA, SupportsDTricks
from gand.hookspecs import hookimpl
from gand_plugins.zoo import ImageOrVector

CONVS = (nn.Conv2d, nn.ConvTranspose2d)


class SelfAttention(nn.Module):
    """x + γ·attention(x) over all positions; γ starts at 0 so training begins convolutional."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.query(x).flatten(2), self.key(x).flatten(2), self.value(x).flatten(2)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)       # (n, hw, hw)
        out = (v @ attn.transpose(1, 2)).view(n, c, h, w)
        return x + self.gamma * out


def with_attention(seq: nn.Sequential, conv_index: int) -> nn.Sequential:
    """seq with a SelfAttention after the activation that follows its conv_index-th convolution."""
    layers = list(seq)
    convs = [i for i, m in enumerate(layers) if isinstance(m, CONVS)]
    at = convs[conv_index]
    act = next(i for i in range(at + 1, len(layers)) if isinstance(layers[i], (nn.ReLU, nn.LeakyReLU)))
    layers.insert(act + 1, SelfAttention(layers[at].out_channels))
    return nn.Sequential(*layers)


def spectral(module: nn.Module) -> nn.Module:
    """Spectral norm on every convolution of module (in place)."""
    for name, child in module.named_children():
        if isinstance(child, CONVS):
            setattr(module, name, spectral_norm(child))
        else:
            spectral(child)
    return module


class SAGAN(ImageOrVector, SupportsADA, SupportsDTricks):
    name = "sagan"
    help = "self-attention GAN: spectral norm in G and D, self-attention, hinge loss, TTUR"
    data_kinds = frozenset({"image"})
    default_loss = "hinge"
    defaults = {"lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.0, "beta2": 0.9, "d_norm": "none"}

    def image_networks(self, info, options, nz, d_in):
        G, D = super().image_networks(info, options, nz, d_in)
        # Middle resolutions: 14×14 at 28 px, 16×16 at 32 and 64 px, 32×32 at 128 px.
        n_g = sum(isinstance(m, CONVS) for m in G.net)
        n_d = sum(isinstance(m, CONVS) for m in D.net)
        G.net = with_attention(G.net, n_g // 2)
        D.net = with_attention(D.net, max(0, (n_d - 1) // 2 - 1))
        return spectral(G), spectral(D)


@hookimpl
def gand_register_variants():
    return [SAGAN]
