"""Checkpoint files: written atomically, hashed, and loaded without unpickling code.

A checkpoint holds everything needed to continue as if nothing happened: networks, optimizers,
variant extras (EMA, w_avg, ADA p...), the step, every RNG state and the job config. It is a
torch file of tensors and plain containers only, read back with `weights_only=True`, so a
crafted file cannot run code.
"""
from __future__ import annotations

import copy
import hashlib
import os
import random
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from gand.engine import faults, torchfile
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
    # The tensors' bytes go from memory to hash and file without holding the interpreter lock
    # (gand.engine.torchfile): the training thread beside this write keeps its pace.
    parts = torchfile.pieces(state)
    digest = hashlib.sha256()
    size = sum(len(part) for part in parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = faults.torn_write_due(path)  # tests only: die half-way through this file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if torn:
                faults.die_mid_write(f, _head(parts, size // 2))
            for part in parts:  # hashed as written: one pass over each part, still warm
                digest.update(part)
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        gate = getattr(_commit, "wait", None)
        if gate is not None:
            gate()  # may raise: the file is then not put in place
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


_commit = threading.local()


@contextmanager
def commit_gate(wait: Callable[[], None]):
    """Within this block, `save` in this thread calls `wait` once a file is written and hashed,
    before it puts the file in place; an exception from `wait` leaves nothing behind. The
    trainer's writer thread waits there for a snapshot's release (gand.engine.snapshot), so
    that serialising and writing need not wait for it."""
    _commit.wait = wait
    try:
        yield
    finally:
        _commit.wait = None


def _head(parts: list, n: int) -> list:
    """The first n bytes of the file `parts` make up, as parts."""
    out = []
    for part in parts:
        if n <= 0:
            break
        out.append(memoryview(part)[:n])
        n -= len(out[-1])
    return out


def to_host(state: Any, into: Any = None, defer: Optional[set] = None,
            deferred: Optional[list] = None, queued: Optional[set] = None) -> Any:
    """A detached copy of `state` in host memory, safe to serialise while training goes on.

    Containers are copied too (a variant's extras may be lists it changes in place), keeping
    their type and attributes (a module's state_dict carries `_metadata`). CUDA tensors are
    copied without blocking into pinned host buffers, then each device is synchronised once;
    CPU tensors are copied. Either way the copy keeps the tensor's strides (channels_last
    stays so).

    `into` is an earlier host copy of the same state that nobody reads any more (the previous
    checkpoint, written): its tensors are filled again where shape, dtype and strides match, so
    the loop's pause is the copy itself — no allocation, no fresh pages to fault in, no pinning.

    A tensor whose `tensor_key` is in `defer` gets its host buffer but is not copied: the pair
    (buffer, tensor) is appended to `deferred` for gand.engine.snapshot to copy later. Given a
    set `queued`, the CUDA devices copied from are added to it instead of synchronised: the
    copies are then only queued on their current streams.
    """
    devices: set[torch.device] = set()

    def reusable(x: torch.Tensor, old: Any) -> bool:
        return (isinstance(old, torch.Tensor) and old.device.type == "cpu"
                and (old.dtype, old.shape, old.stride()) == (x.dtype, x.shape, x.stride())
                and (x.device.type != "cuda" or old.is_pinned()))

    def copy_of(x: Any, old: Any) -> Any:
        if isinstance(x, torch.Tensor):
            x = x.detach()
            cuda = x.device.type == "cuda"
            if reusable(x, old):
                out = old
            elif cuda:
                out = torch.empty_like(x, device="cpu", pin_memory=True)
            else:
                out = torch.empty_like(x, device="cpu")  # same strides as x
            if defer and tensor_key(x) in defer:
                deferred.append((out, x))
                return out
            out.copy_(x, non_blocking=cuda)
            if cuda:
                devices.add(x.device)
            return out
        if isinstance(x, dict):
            was = old if isinstance(old, dict) else {}
            out = copy.copy(x)  # same class, same attributes
            for k, v in x.items():
                out[k] = copy_of(v, was.get(k))
            return out
        if isinstance(x, (list, tuple)):
            was = old if isinstance(old, type(x)) else ()
            items = [copy_of(v, was[i] if i < len(was) else None) for i, v in enumerate(x)]
            return items if isinstance(x, list) else tuple(items)
        return x  # numbers, strings, None: immutable

    host = copy_of(state, into)
    if queued is not None:
        queued |= devices
        return host
    for dev in devices:
        torch.cuda.current_stream(dev).synchronize()
    return host


def tensor_key(x: torch.Tensor) -> tuple:
    """What makes two tensor objects the same memory: a module's state_dict holds detached
    aliases of its parameters, an optimizer's the tensors themselves."""
    return (x.device, x.data_ptr(), x.dtype, x.shape, x.stride())


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
