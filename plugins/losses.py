"""Adversarial losses: the lecture's objectives, computed from raw D outputs.

All of them take logits or critic scores, never probabilities: Sigmoid + BCE (the lecture's
form) cannot run under CUDA autocast and loses precision near 0 and 1; BCE-with-logits cannot.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gand.api import Loss, Option
from gand.hookspecs import hookimpl


def _targets(out: torch.Tensor, value: float) -> torch.Tensor:
    return torch.full_like(out, value)


class NonSaturatingBCE(Loss):
    """The non-saturating GAN loss: D separates real from fake, G maximises log D(G(z))."""

    name = "bce"
    help = "non-saturating GAN loss on logits; label smoothing 0.9/0.1 as in the lecture"
    output = "logits"
    options = {
        "label_smoothing": Option(bool, True, "real target 0.9, fake target 0.1 (the lecture's trick)"),
    }

    def _labels(self) -> tuple[float, float]:
        return (0.9, 0.1) if self.opts["label_smoothing"] else (1.0, 0.0)

    def d_loss(self, D, *, real, fake, ctx):
        real_t, fake_t = self._labels()
        real_out, fake_out = D(real), D(fake)
        loss = (F.binary_cross_entropy_with_logits(real_out, _targets(real_out, real_t))
                + F.binary_cross_entropy_with_logits(fake_out, _targets(fake_out, fake_t)))
        # D's accuracy on both halves: a D stuck near 1.0 starves G of gradient.
        return loss, {"d_real_acc": (real_out > 0).float().mean(),
                      "d_fake_acc": (fake_out < 0).float().mean()}

    def g_loss(self, D, *, real, fake, ctx):
        out = D(fake)
        return F.binary_cross_entropy_with_logits(out, _targets(out, self._labels()[0])), {}


class Minimax(NonSaturatingBCE):
    """The original saturating objective: G minimises log(1 − D(G(z)))."""

    name = "minimax"
    help = "the original saturating minimax loss (G minimises log(1 - D(G(z))))"
    options = {"label_smoothing": Option(bool, False, "real target 0.9, fake target 0.1")}

    def g_loss(self, D, *, real, fake, ctx):
        # log(1 − sigmoid(l)) = −softplus(l), stable for any logit.
        return -F.softplus(D(fake)).mean(), {}


class LeastSquares(Loss):
    """LSGAN: least squares towards 1 for real and 0 for fake (Mao et al.)."""

    name = "ls"
    help = "least-squares (LSGAN) loss"
    output = "critic"

    def d_loss(self, D, *, real, fake, ctx):
        return 0.5 * (((D(real) - 1) ** 2).mean() + (D(fake) ** 2).mean()), {}

    def g_loss(self, D, *, real, fake, ctx):
        return 0.5 * ((D(fake) - 1) ** 2).mean(), {}


class Wasserstein(Loss):
    """The WGAN critic objective; needs a Lipschitz constraint (clip, gp) to mean anything."""

    name = "wasserstein"
    help = "Wasserstein critic loss (pair with weight clipping or a gradient penalty)"
    output = "critic"

    def d_loss(self, D, *, real, fake, ctx):
        real_out, fake_out = D(real), D(fake)
        w = real_out.mean() - fake_out.mean()
        return -w, {"wasserstein": w}

    def g_loss(self, D, *, real, fake, ctx):
        return -D(fake).mean(), {}


class Hinge(Loss):
    """The hinge loss of SAGAN / BigGAN."""

    name = "hinge"
    help = "hinge loss (SAGAN)"
    output = "critic"

    def d_loss(self, D, *, real, fake, ctx):
        return F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean(), {}

    def g_loss(self, D, *, real, fake, ctx):
        return -D(fake).mean(), {}


class WassersteinGP(Wasserstein):
    """WGAN-GP: the Wasserstein critic loss plus the gradient penalty (Gulrajani et al.)."""

    name = "wgan-gp"
    help = "Wasserstein critic loss + gradient penalty (lambda gp_weight, default 10)"
    options = {"gp_weight": Option(float, 10.0, "gradient penalty weight lambda", min=0.0)}
    per_example_d = True

    def d_loss(self, D, *, real, fake, ctx):
        # Imported here: gand_plugins.regularizers registers its own classes; no import cycle.
        from gand_plugins.regularizers import gradient_penalty

        loss, report = super().d_loss(D, real=real, fake=fake, ctx=ctx)
        gp = gradient_penalty(D, real, fake)
        return loss + self.opts["gp_weight"] * gp, {**report, "gp": gp}


class BoundaryEquilibrium(Loss):
    """BEGAN's objective on an autoencoder D: `D(x)` is each example's reconstruction error.

    D's loss is L(x) − k·L(G(z)) and G's is L(G(z)). The equilibrium term k is this loss's
    state: `balance()` moves it after each G update, k ← clamp(k + λ_k·(γ·L(x) − L(G(z))), 0, 1),
    and `state_dict()` carries it across a resume.
    """

    name = "began"
    help = "BEGAN: autoencoder reconstruction losses balanced by the equilibrium term k"
    output = "reconstruction"
    options = {
        "gamma": Option(float, 0.5, "diversity ratio gamma = E[L(G(z))] / E[L(x)]", min=0.0,
                        max=1.0),
        "lambda_k": Option(float, 0.001, "learning rate of the equilibrium term k", min=0.0),
    }

    def __init__(self, options=None):
        super().__init__(options)
        self.k = torch.zeros(())

    def d_loss(self, D, *, real, fake, ctx):
        l_real, l_fake = D(real).mean(), D(fake).mean()
        self.k = self.k.to(l_real.device)
        return l_real - self.k * l_fake, {"l_real": l_real.detach(), "l_fake": l_fake.detach()}

    def g_loss(self, D, *, real, fake, ctx):
        l_fake = D(fake).mean()
        return l_fake, {}

    def balance(self, l_real: torch.Tensor, l_fake: torch.Tensor) -> torch.Tensor:
        """Moves k toward equilibrium; returns γ·L(x) − L(G(z)) (no host sync: tensors)."""
        gap = self.opts["gamma"] * l_real - l_fake
        self.k = (self.k.to(gap.device) + self.opts["lambda_k"] * gap).clamp(0.0, 1.0)
        return gap

    def state_dict(self):
        return {"k": self.k.detach().clone()}

    def load_state_dict(self, state):
        if "k" in state:
            self.k = torch.as_tensor(state["k"]).detach().clone().float()


@hookimpl
def gand_register_losses():
    return [NonSaturatingBCE, Minimax, LeastSquares, Wasserstein, Hinge, WassersteinGP,
            BoundaryEquilibrium]
