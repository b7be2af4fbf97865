"""`began`: boundary equilibrium GAN (Berthelot et al.), an autoencoder as discriminator.

D reconstructs its input and the loss is the reconstruction error L(v) = |v − D(v)|:
D minimises L(x) − k·L(G(z)), G minimises L(G(z)), and the equilibrium term
k ← clamp(k + λ_k·(γ·L(x) − L(G(z))), 0, 1) keeps D from winning. The convergence measure
M = L(x) + |γ·L(x) − L(G(z))| is reported. k is the began loss's state (its state_dict), so
checkpoints keep it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gand.api import Models, Option, StepContext
from gand.engine.adversarial import ema_decay, ema_update
from gand.hookspecs import hookimpl
from gand_plugins.dcgan import Discriminator, Generator, dcgan_init
from gand_plugins.gan import mlp
from gand_plugins.zoo import ImageOrVector


class AutoEncoder(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.encoder, self.decoder, self.shape = encoder, decoder, shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x).flatten(1)).view(x.shape[0], *self.shape)


class BEGAN(ImageOrVector):
    name = "began"
    help = "boundary equilibrium GAN: autoencoder D, loss |x - D(x)|, equilibrium term k"
    outputs = frozenset({"reconstruction"})
    default_loss = "began"
    options = {
        **ImageOrVector.options,
        "n_hidden": Option(int, 64, "size of the autoencoder's code", min=1, max=4096),
    }
    defaults = {"lr": 1e-4, "d_norm": "none"}

    def image_networks(self, info, options, nz, d_in):
        G, _ = super().image_networks(info, options, nz, d_in)
        c, s, _ = self.data_shape(info, options)
        enc = Discriminator(options["ndf"], c, s, options["d_norm"])
        last = enc.net[-1]  # the score layer becomes the code layer
        enc.net[-1] = nn.Conv2d(last.in_channels, options["n_hidden"], last.kernel_size, 1, 0)
        dec = Generator(options["n_hidden"], options["ngf"], c, s)
        D = AutoEncoder(enc, dec, (c, s, s))
        D.apply(dcgan_init)
        return G, D

    def vector_networks(self, info, options, nz, d_extra=0):
        G, _ = super().vector_networks(info, options, nz)
        dim, h, n = math.prod(info.shape), options["hidden"], options["layers"]
        enc = mlp(dim, h, options["n_hidden"], n, nn.LeakyReLU(0.2))
        dec = mlp(options["n_hidden"], h, dim, n, nn.LeakyReLU(0.2))
        return G, AutoEncoder(enc, dec, info.shape)

    def discriminate(self, D, x, y):
        # Each example's mean absolute reconstruction error, in float32.
        return (x.float() - D(x).float()).abs().flatten(1).mean(1)

    def train_step(self, models: Models, loss, ctx: StepContext) -> dict[str, torch.Tensor]:
        G, D = models.G, models.D
        opt_g, opt_d = models.optimizers["G"], models.optimizers["D"]
        bs, opts, dev = ctx.batch_size, ctx.options, ctx.device
        if "k" in models.extras:  # a checkpoint of gand 0.1 kept k with the networks
            loss.load_state_dict({"k": models.extras.pop("k")})

        def d_call(x):
            with ctx.autocast():
                return self.discriminate(D, x, None)

        # 1. The autoencoder D: d_steps updates on fresh real batches and fresh fakes.
        D.requires_grad_(True)
        for _ in range(opts["d_steps"]):
            real = ctx.data[0].sample(bs)
            with torch.no_grad(), ctx.autocast():
                fake = G(self.latent(models, bs, dev)).float()
            d_loss, extra = loss.d_loss(d_call, real=real.x, fake=fake, ctx=ctx)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            loss.after_d_step(D, ctx)

        # 2. G through a frozen D.
        D.requires_grad_(False)
        with ctx.autocast():
            fake = G(self.latent(models, bs, dev)).float()
        g_loss, _ = loss.g_loss(d_call, real=real.x, fake=fake, ctx=ctx)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)

        # 3. The loss's equilibrium controller and the convergence measure.
        l_real, l_fake = extra["l_real"], g_loss.detach()
        gap = loss.balance(l_real, l_fake)
        if "G_ema" in models.nets:
            ema_update(models.nets["G_ema"], G, ema_decay(opts["ema"], ctx.step))
        return {"d_loss": d_loss.detach(), "g_loss": l_fake, "l_real": l_real,
                "k": loss.k.detach().clone(), "M": l_real + gap.abs()}


@hookimpl
def gand_register_variants():
    return [BEGAN]
