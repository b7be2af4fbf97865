"""`lsgan`: least-squares GAN (Mao et al.), DCGAN networks for images, MLPs for vectors."""
from __future__ import annotations


from gand.api import SupportsADA, SupportsDTricks
from gand.hookspecs import hookimpl
from gand_plugins.zoo import ImageOrVector


class LSGAN(ImageOrVector, SupportsADA, SupportsDTricks):
    name = "lsgan"
    help = "least-squares GAN: D regresses real to 1 and fake to 0"
    # D is a regressor (no sigmoid), so it pairs with the critic losses.
    outputs = frozenset({"critic"})
    default_loss = "ls"


@hookimpl
def gand_register_variants():
    return [LSGAN]
