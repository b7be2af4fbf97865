"""Walks through a generator's latent space: a row between two latents, or a 2-D grid.

The lecture's exercise: interpolate between two noise vectors and watch the digit change
smoothly; over a grid, two directions at once. Works with any variant that declares
gand.api.LatentSpace (as AdversarialVariant does); variants with other pictures to show declare
StyleMixing or Translation.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from gand.api import LatentSpace
from gand.errors import UsageError

METHODS = ("slerp", "lerp")


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Straight lines between rows of `a` and `b` at fractions `t` (shape (k, 1))."""
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Great-circle interpolation: keeps a Gaussian latent's norm where a line would shrink it."""
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    out = (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
    # Nearly parallel latents: the formula divides by ~0, and a line is as good.
    return torch.where(so.abs() < 1e-6, lerp(a, b, t), out)


def path(z0: torch.Tensor, z1: torch.Tensor, steps: int, method: str = "slerp") -> torch.Tensor:
    """`steps` latents from z0 to z1 inclusive (z0, z1 of shape (nz,))."""
    t = torch.linspace(0, 1, steps, device=z0.device).unsqueeze(1)
    f = slerp if method == "slerp" else lerp
    return f(z0.expand(steps, -1), z1.expand(steps, -1), t)


def plane(corners: torch.Tensor, steps: int, method: str = "slerp") -> torch.Tensor:
    """A steps×steps grid spanned by four corner latents (rows: first direction, columns: second).

    Row i interpolates between the left edge (corners 0→2) and the right edge (corners 1→3).
    """
    left = path(corners[0], corners[2], steps, method)
    right = path(corners[1], corners[3], steps, method)
    return torch.cat([path(l, r, steps, method) for l, r in zip(left, right)])


def check(steps: int, method: str) -> None:
    if not 2 <= steps <= 64:
        raise UsageError(f"--steps {steps} is invalid; expected 2 to 64")
    if method not in METHODS:
        raise UsageError(f"--method {method!r} is invalid; expected slerp or lerp")


@torch.no_grad()
def latent_walk(variant: Any, models: Any, *, steps: int = 10, grid: bool = False,
                seed: int = 0, method: str = "slerp", label: Optional[int] = None) -> torch.Tensor:
    """Generated outputs along a latent row (steps) or over a latent grid (steps²), in order."""
    check(steps, method)
    if not isinstance(variant, LatentSpace):
        raise UsageError(f"variant {variant.name} does not expose its latent space "
                         f"(gand.api.LatentSpace), so it cannot be interpolated")
    G = models.nets.get("G_ema", models.nets.get("G"))
    device = next(G.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    ends = variant.latent(models, 4 if grid else 2, device, generator=g)
    z = plane(ends, steps, method) if grid else path(ends[0], ends[1], steps, method)
    y = None
    if variant.needs_labels:
        # A conditional generator keeps one class so that only the latent moves.
        chosen = int(torch.randint(0, max(1, models.extras.get("num_classes", 1)), (1,),
                                   generator=torch.Generator().manual_seed(seed))) \
            if label is None else int(label)
        y = torch.full((z.shape[0],), chosen, device=device, dtype=torch.long)
    was_training = G.training
    G.eval()
    try:
        return variant.generate_from(G, z, y).float()
    finally:
        G.train(was_training)
