"""Synthetic distributions: gauss1d, and the ring8 / grid25 Gaussian mixtures."""
from __future__ import annotations

import math
from typing import Optional

import torch

from gand.api import DataInfo, DatasetType, DataSource, FunctionSource
from gand_plugins.datasets.common import _check_vector_shape, _no_arg


class Gauss1d(DatasetType):
    name = "gauss1d"
    help = "the 1-D standard normal N(0, 1); endless, unlabelled"
    needs_arg = False

    def describe(self, arg: Optional[str]) -> DataInfo:
        _no_arg(self.name, arg)
        return DataInfo(spec=self.name, kind="vector", shape=(1,), num_classes=None, size=None)

    def load(self, arg, info, shape, device) -> DataSource:
        _check_vector_shape(info, shape)

        def draw(n: int, dev: torch.device):
            return torch.randn(n, 1, device=dev), None

        return FunctionSource(info, draw, device)


class _Mixture(DatasetType):
    """An equal-weight mixture of isotropic 2-D Gaussians around fixed modes."""

    modes: list[list[float]]
    std: float

    def describe(self, arg: Optional[str]) -> DataInfo:
        _no_arg(self.name, arg)
        return DataInfo(spec=self.name, kind="vector", shape=(2,), num_classes=None, size=None,
                        extra={"modes": [list(m) for m in self.modes], "std": self.std})

    def load(self, arg, info, shape, device) -> DataSource:
        _check_vector_shape(info, shape)
        centres = torch.tensor(self.modes, dtype=torch.float32)
        std = self.std
        on_device: dict[torch.device, torch.Tensor] = {}

        def draw(n: int, dev: torch.device):
            means = on_device.get(dev)
            if means is None:
                means = on_device[dev] = centres.to(dev)
            idx = torch.randint(0, means.shape[0], (n,), device=dev)
            return means[idx] + std * torch.randn(n, 2, device=dev), None

        return FunctionSource(info, draw, device)


def _ring_modes(k: int, radius: float = 1.0) -> list[list[float]]:
    return [[radius * math.cos(2 * math.pi * i / k), radius * math.sin(2 * math.pi * i / k)]
            for i in range(k)]


class Ring8(_Mixture):
    name = "ring8"
    help = "8 Gaussians (std 0.01) on the unit circle; the classic mode-collapse check"
    needs_arg = False
    modes = _ring_modes(8)
    std = 0.01


class Grid25(_Mixture):
    name = "grid25"
    help = "25 Gaussians (std 0.05) on the grid {-4,-2,0,2,4}^2"
    needs_arg = False
    modes = [[float(x), float(y)] for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)]
    std = 0.05


# ---------------------------------------------------------------------------------------------
# MNIST from IDX files
