"""Helpers the built-in dataset types share: spec text, shape checks, pixel scaling."""
from __future__ import annotations

from typing import Optional

import torch

from gand.api import DataInfo
from gand.errors import UsageError


def _spec(name: str, arg: Optional[str]) -> str:
    return name if arg is None else f"{name}:{arg}"


def _no_arg(name: str, arg: Optional[str]) -> None:
    if arg is not None:
        raise UsageError(f"dataset {name} takes no argument; got {name}:{arg} (use --data {name})")


def _check_vector_shape(info: DataInfo, shape) -> None:
    if tuple(shape) != tuple(info.shape):
        raise UsageError(f"dataset {info.spec} has shape {tuple(info.shape)}; "
                         f"cannot load it at shape {tuple(shape)}")


def _check_image_shape(spec: str, shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or shape[1] < 1 or shape[2] < 1:
        raise UsageError(f"dataset {spec}: cannot load images at shape {shape}; "
                         f"expected (channels, height, width) with 1 or 3 channels")
    return shape  # type: ignore[return-value]


def _u8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1]."""
    return x.to(torch.float32).div_(127.5).sub_(1.0)


# ---------------------------------------------------------------------------------------------
# Synthetic distributions
