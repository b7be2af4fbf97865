"""An example third-party gand plugin: the `tiny-mlp` variant and the `softplus-ns` loss.

It uses only gand's public interfaces (gand.api, gand.engine.adversarial, gand.hookspecs) and
reaches gand through its entry point (`[project.entry-points.gand] example = "gand_example"`).
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from gand.api import DataInfo, Loss, Option
from gand.engine.adversarial import AdversarialVariant
from gand.hookspecs import hookimpl

__version__ = "0.1.0"


class TinyMLP(AdversarialVariant):
    """One hidden layer in G and in D; AdversarialVariant supplies the training step."""

    name = "tiny-mlp"
    help = "a one-hidden-layer MLP GAN for vector data (the gand-example-plugin package)"
    data_kinds = frozenset({"vector"})
    outputs = frozenset({"logits"})  # D ends in a logit: losses on critic scores are refused
    options = {
        # AdversarialVariant reads `nz` (the latent size) when it builds and samples.
        "nz": Option(int, 4, "latent size", min=1, max=1024),
        "hidden": Option(int, 32, "hidden units of G and D", min=1, max=4096),
    }
    defaults = {"lr": 1e-3, "batch_size": 128}  # engine options this variant trains best with

    def networks(self, info: DataInfo, options):
        dim = math.prod(info.shape)
        G = nn.Sequential(nn.Linear(options["nz"], options["hidden"]), nn.ReLU(),
                          nn.Linear(options["hidden"], dim), nn.Unflatten(1, info.shape))
        D = nn.Sequential(nn.Flatten(), nn.Linear(dim, options["hidden"]), nn.LeakyReLU(0.2),
                          nn.Linear(options["hidden"], 1))
        return G, D


class SoftplusNS(Loss):
    """The non-saturating GAN loss written with softplus: −log σ(l) = softplus(−l)."""

    name = "softplus-ns"
    help = "non-saturating GAN loss via softplus on logits (gand-example-plugin)"
    output = "logits"
    options = {"real_weight": Option(float, 1.0, "weight of D's loss on real data", min=0.0)}

    def d_loss(self, D, *, real, fake, ctx):
        real_term = F.softplus(-D(real)).mean()
        fake_term = F.softplus(D(fake)).mean()
        return self.opts["real_weight"] * real_term + fake_term, {"d_real": real_term.detach()}

    def g_loss(self, D, *, real, fake, ctx):
        return F.softplus(-D(fake)).mean(), {}


@hookimpl
def gand_register_variants() -> list:
    return [TinyMLP]


@hookimpl
def gand_register_losses() -> list:
    return [SoftplusNS]
