"""Regularisers that join a base loss as `--loss BASE+NAME`: gp, r1 and weight clipping."""
from __future__ import annotations

from collections.abc import Callable

import torch

from gand.api import Option, Regularizer
from gand.hookspecs import hookimpl


def _grad_norms(D: Callable, x: torch.Tensor) -> torch.Tensor:
    """‖∇ₓ D(x)‖ per output of D, kept in the graph so D's loss can be differentiated through it.

    One output per example, or per pack of m examples with PacGAN's `--set pack=m`: then the
    gradient of a pack's score is taken over its m examples together, as the packed D sees them.
    """
    x = x.detach().requires_grad_(True)
    out = D(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.reshape(out.shape[0], -1).norm(2, dim=1)


def gradient_penalty(D: Callable, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's E[(‖∇D(x̂)‖ − 1)²] at random points x̂ between real and fake examples."""
    n = min(real.shape[0], fake.shape[0])
    real, fake = real[:n].detach(), fake[:n].detach()
    alpha = torch.rand(n, *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = alpha * real + (1 - alpha) * fake
    return ((_grad_norms(D, x_hat) - 1) ** 2).mean()


class GradientPenalty(Regularizer):
    """The WGAN-GP penalty as a part: `wasserstein+gp` is `wgan-gp`, `hinge+gp` works too."""

    name = "gp"
    help = "gradient penalty on real/fake interpolates (WGAN-GP), weight gp_weight"
    options = {"gp_weight": Option(float, 10.0, "gradient penalty weight lambda", min=0.0)}
    per_example_d = True
    conflicts = frozenset({"clip"})

    def d_penalty(self, D, *, real, fake, ctx):
        gp = gradient_penalty(D, real, fake)
        return self.opts["gp_weight"] * gp, {"gp": gp.detach()}


class R1(Regularizer):
    """R1 (Mescheder et al.): (γ/2)·E[‖∇D(x)‖²] on real data only."""

    name = "r1"
    help = "R1 penalty on real data, weight r1_gamma"
    options = {"r1_gamma": Option(float, 10.0, "R1 weight gamma (the penalty is gamma/2 · E‖∇D‖²)",
                                  min=0.0)}
    per_example_d = True

    def d_penalty(self, D, *, real, fake, ctx):
        r1 = (_grad_norms(D, real) ** 2).mean()
        return 0.5 * self.opts["r1_gamma"] * r1, {"r1": r1.detach()}


class Clip(Regularizer):
    """WGAN's weight clipping: every D weight into [−c, c] after each D update."""

    name = "clip"
    help = "clip D's weights to [-clip_value, clip_value] after each D step (WGAN)"
    options = {"clip_value": Option(float, 0.01, "weight clipping bound c", min=0.0)}
    conflicts = frozenset({"gp", "wgan-gp"})  # two Lipschitz constraints fight each other

    @torch.no_grad()
    def after_d_step(self, D, ctx):
        c = self.opts["clip_value"]
        for p in D.parameters():
            p.clamp_(-c, c)


@hookimpl
def gand_register_losses():
    return [GradientPenalty, R1, Clip]
