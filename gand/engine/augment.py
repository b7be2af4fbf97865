"""Adaptive discriminator augmentation (ADA, Karras et al. 2020) for any image variant.

Both real and fake images pass through the same random, differentiable augmentations before D,
each applied to an image with probability p. p follows D's overfitting: every `ADA_INTERVAL`
generator steps the heuristic r_t = E[sign(D(real))] is measured, and p moves by
sign(r_t − target) · batch · interval / (ada_kimg · 1000), clamped to [0, 1], so that going
from 0 to 1 takes ada_kimg thousand real images (StyleGAN2-ADA: 500).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from gand.api import Option

ADA_INTERVAL = 4  # generator steps between adjustments of p

OPTIONS: dict[str, Option] = {
    "ada": Option(bool, False, "adaptive discriminator augmentation of real and fake images"),
    "ada_target": Option(float, 0.6, "ADA's target for E[sign(D(real))]", min=0.0, max=1.0),
    "ada_kimg": Option(float, 500.0, "thousands of images for ADA's p to go from 0 to 1",
                       min=1e-3),
}


def _chance(n: int, p: float, device) -> torch.Tensor:
    """A (n, 1, 1, 1) float mask: 1 for the images that get this augmentation."""
    return (torch.rand(n, 1, 1, 1, device=device) < p).float()


def augment(x: torch.Tensor, p: float) -> torch.Tensor:
    """x (N, C, H, W in [-1, 1]) with each augmentation applied per image with probability p.

    Every operation is differentiable in x, so G receives gradients through it.
    """
    if p <= 0:
        return x
    n, c, h, w = x.shape
    dev = x.device
    # x-flip
    flip = _chance(n, p, dev)
    x = flip * x.flip(3) + (1 - flip) * x
    # integer translation up to 1/8 of the size, reflecting at the borders
    move = _chance(n, p, dev).view(n, 1)
    shift = torch.round((torch.rand(n, 2, device=dev) * 2 - 1) * 0.125 * torch.tensor([w, h], device=dev))
    shift = shift * move
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = shift[:, 0] * 2 / w
    theta[:, 1, 2] = shift[:, 1] * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid.to(x.dtype), mode="nearest", padding_mode="reflection",
                      align_corners=False)
    # brightness: add N(0, 0.2)
    x = x + _chance(n, p, dev) * torch.randn(n, 1, 1, 1, device=dev) * 0.2
    # contrast: scale around the image mean by lognormal(0, 0.5 ln 2)
    m = _chance(n, p, dev)
    factor = torch.exp(torch.randn(n, 1, 1, 1, device=dev) * 0.5 * math.log(2))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * (m * factor + (1 - m))
    # saturation (colour images): scale around the grey value by lognormal(0, ln 2)
    if c == 3:
        m = _chance(n, p, dev)
        factor = torch.exp(torch.randn(n, 1, 1, 1, device=dev) * math.log(2))
        grey = x.mean(dim=1, keepdim=True)
        x = grey + (x - grey) * (m * factor + (1 - m))
    # cutout: a zeroed square of half the size at a random centre
    m = _chance(n, p, dev)
    cy = torch.rand(n, 1, 1, 1, device=dev)
    cx = torch.rand(n, 1, 1, 1, device=dev)
    ys = (torch.arange(h, device=dev).view(1, 1, h, 1) + 0.5) / h
    xs = (torch.arange(w, device=dev).view(1, 1, 1, w) + 0.5) / w
    inside = ((ys - cy).abs() < 0.25) & ((xs - cx).abs() < 0.25)
    return x * (1 - m * inside.to(x.dtype))


def adjust(p: float, real_scores: torch.Tensor, options: dict[str, Any], batch_size: int) -> float:
    """ADA's new p from D's raw outputs on a real batch (logits or critic scores)."""
    r_t = torch.sign(real_scores.detach().float()).mean().item()
    step = batch_size * ADA_INTERVAL / (options["ada_kimg"] * 1000)
    direction = (r_t > options["ada_target"]) - (r_t < options["ada_target"])
    return float(min(1.0, max(0.0, p + direction * step)))
