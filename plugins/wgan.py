"""`wgan` (weight clipping) and `wgan-gp` (gradient penalty): Wasserstein critics.

Images get the DCGAN networks, vectors the gan MLPs. The critic ends in an unbounded score, so
only critic losses (wasserstein, wgan-gp, hinge, ls) combine with these variants.
"""
from __future__ import annotations


from gand.api import SupportsADA, SupportsDTricks
from gand.hookspecs import hookimpl
from gand_plugins.zoo import ImageOrVector


class WGAN(ImageOrVector, SupportsADA, SupportsDTricks):
    name = "wgan"
    help = "Wasserstein GAN: weight clipping 0.01, RMSprop 5e-5, 5 critic steps per G step"
    outputs = frozenset({"critic"})
    default_loss = "wasserstein+clip"
    defaults = {"optimizer": "rmsprop", "lr": 5e-5, "d_steps": 5}


class WGANGP(ImageOrVector, SupportsADA, SupportsDTricks):
    name = "wgan-gp"
    help = "WGAN-GP: gradient penalty 10, Adam(0, 0.9) 1e-4, 5 critic steps, critic without BatchNorm"
    outputs = frozenset({"critic"})
    default_loss = "wgan-gp"
    # The penalty is per example, so the critic must not use BatchNorm (no norm, as allowed).
    defaults = {"lr": 1e-4, "beta1": 0.0, "beta2": 0.9, "d_steps": 5, "d_norm": "none"}


@hookimpl
def gand_register_variants():
    return [WGAN, WGANGP]
