"""The distances between two sets of feature vectors that FID and KID report.

FID is the standard formula (Heusel et al. 2017, as pytorch-fid computes it):
‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^½). KID is the unbiased MMD² with the cubic polynomial kernel
k(x, y) = (x·y/d + 1)³, averaged over random subsets (Bińkowski et al. 2018).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg

from gand.errors import UsageError


def mean_cov(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the (unbiased) covariance of feature rows, in float64."""
    f = features.double().cpu().numpy()
    if f.shape[0] < 2:
        raise UsageError(f"FID needs at least 2 samples; got {f.shape[0]}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """The Fréchet distance between two Gaussians N(mu1, s1) and N(mu2, s2)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    s1, s2 = np.atleast_2d(s1), np.atleast_2d(s2)
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # Dead feature units make the product singular; the offset below handles it.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1.dot(s2))
        if not np.isfinite(covmean).all():
            # pytorch-fid's remedy for a product too singular for the square root.
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = np.real(covmean)  # numerical noise can leave tiny imaginary parts
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID between two sets of feature rows."""
    return frechet_distance(*mean_cov(a), *mean_cov(b))


def kid(a: torch.Tensor, b: torch.Tensor, subsets: int = 50, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets) between two sets of feature rows."""
    x, y = a.double(), b.double()
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise UsageError(f"KID needs at least 2 samples in each set; got {x.shape[0]} and {y.shape[0]}")
    d = x.shape[1]
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        xs = x[torch.randperm(x.shape[0], generator=g)[:m]]
        ys = y[torch.randperm(y.shape[0], generator=g)[:m]]
        kxx = (xs @ xs.T / d + 1) ** 3
        kyy = (ys @ ys.T / d + 1) ** 3
        kxy = (xs @ ys.T / d + 1) ** 3
        # Unbiased: the diagonals (each sample with itself) are left out.
        mmd = ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
               + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
               - 2 * kxy.mean())
        values.append(float(mmd))
    v = np.array(values)
    return float(v.mean()), float(v.std())


def mean_pairwise_distance(x: torch.Tensor, max_rows: int = 2000) -> float:
    """The mean Euclidean distance between distinct samples (the lecture's collapse check)."""
    flat = x[:max_rows].reshape(min(x.shape[0], max_rows), -1).double()
    n = flat.shape[0]
    if n < 2:
        raise UsageError(f"the diversity check needs at least 2 samples; got {n}")
    d = torch.cdist(flat, flat)
    return float(d.sum() / (n * (n - 1)))  # the zero diagonal is not a pair
