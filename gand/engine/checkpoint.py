"""Checkpoint files: written atomically, hashed, and loaded without unpickling code.

A checkpoint holds everything needed to continue as if nothing happened: networks, optimizers,
variant extras (EMA, w_avg, ADA p...), the step, every RNG state and the job config. It is a
torch file of tensors and plain containers only, read back with `weights_only=True`, so a
crafted file cannot run code.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from gand.errors import CheckpointError
from gand.jobs.checkpoints import sha256_of, verify  # noqa: F401  (sha256_of: re-exported)

FORMAT = 1


def file_name(step: int, epoch: int | None = None) -> str:
    """`step_00000300-e2.pt`: the epoch of the lease that wrote it keeps owners apart."""
    return f"step_{step:08d}" + (f"-e{epoch}" if epoch is not None else "") + ".pt"


def save(path: Path, state: dict[str, Any]) -> tuple[int, str]:
    """Writes `state` to `path` atomically; returns (bytes, sha256).

    Temp file in the same folder, fsync, rename, fsync of the folder: a crash or a full disk
    leaves either the old set of files or the new one, never a torn checkpoint under the name.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}") from None
    return len(data), digest


def load(path: Path, sha256: Optional[str] = None, map_location: Any = "cpu") -> dict[str, Any]:
    """Reads a checkpoint, verifying it first exactly as `gand resume` does (gand.jobs.checkpoints:
    a regular file with its recorded sha256)."""
    path = Path(path)
    verify(path, sha256)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a gand checkpoint of format {FORMAT}")
    return state


def capture_rng() -> dict[str, Any]:
    """Every RNG the training loop draws from, as tensors and plain values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
