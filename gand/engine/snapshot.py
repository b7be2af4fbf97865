"""A checkpoint's host copy, taken in two parts so that the loop pauses for the smaller one.

Most of a checkpoint is what the optimizers own: the parameters and their moments (Adam's two
per parameter make them three quarters of CycleGAN's 400 MB). Those change only when an
optimizer steps, and the next step's forward and backward passes come first. So the loop
copies the rest at once (buffers, EMA networks, image pools, RNG: anything a forward pass may
change) and leaves the optimizers' tensors to be copied beside training, by the writer thread
on a CPU or on a side stream on a GPU. Whatever optimizer steps first waits for that copy,
through a step pre-hook. On a GPU the host waits for nothing: the first part is queued on the
training stream ahead of the next step's kernels, the optimizer's stream waits for the side
stream, and only the writer thread waits for the copies to land.

One rule keeps it safe: an optimizer's tensors must change only in its step. Each one's
version counter (bumped by every in-place change) is read when the snapshot is taken and again
when the snapshot is released, by the training thread, before the first optimizer step or
before the loop waits for the write. A change in between (a plugin that edits weights outside
`optimizer.step`) makes the snapshot stale: that checkpoint is not written, the writer says
so, and later checkpoints are copied whole at the pause (`Run.defer_copy` turned off).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

import torch

from gand.engine import checkpoint as ckpt


class StaleSnapshot(Exception):
    """An optimizer's tensor changed between a snapshot and its copy."""


def optimizer_tensors(optimizers: list[torch.optim.Optimizer]) -> set:
    """The keys (checkpoint.tensor_key) of every parameter and state tensor of `optimizers`."""
    keys = set()
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                keys.add(ckpt.tensor_key(p))
                for v in opt.state.get(p, {}).values():
                    if isinstance(v, torch.Tensor):
                        keys.add(ckpt.tensor_key(v))
    return keys


class Snapshot:
    """The host copy of `state` (`host`), whole once `complete()` returns it."""

    def __init__(self, state: Any, optimizers: list[torch.optim.Optimizer],
                 into: Any = None, defer: bool = True):
        optimizers = [o for o in optimizers if isinstance(o, torch.optim.Optimizer)] \
            if defer else []
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        queued: set[torch.device] = set()
        self.host = ckpt.to_host(state, into=into, defer=optimizer_tensors(optimizers),
                                 deferred=self._pending, queued=queued)
        # On a GPU the rest is copied on the current stream too, without the host waiting:
        # the next step's kernels, queued after those copies, cannot change what they read.
        # The writer waits for this event before it reads the copy.
        self._queued: list[torch.cuda.Event] = []
        for device in queued:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))
            self._queued.append(event)
        self._versions = [src._version for _, src in self._pending]
        self._lock = threading.Lock()     # one copier: the writer or, failing it, the loop
        self._copied = not self._pending  # guarded by _lock (CPU)
        self._released = threading.Event()
        self._stale: Optional[str] = None
        self._event: Optional[torch.cuda.Event] = None
        self._hooks: list = []
        self.pause_ms = 0.0   # the loop's pause at the checkpoint (set by the loop)
        self.waited_ms = 0.0  # how long the loop waited later for the deferred copy
        if not self._pending:
            self._released.set()
            return
        on_gpu = [(dst, src) for dst, src in self._pending if src.device.type == "cuda"]
        if on_gpu:
            # Queued now on a side stream, after everything the loop has queued so far; the
            # first optimizer step's stream waits for it. (The few CPU tensors of a GPU run,
            # such as Adam's step counts, are copied at once.)
            device = on_gpu[0][1].device
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for dst, src in on_gpu:
                    dst.copy_(src, non_blocking=True)
                    src.record_stream(side)  # not reused by the allocator until copied
            for dst, src in self._pending:
                if src.device.type != "cuda":
                    dst.copy_(src)
            self._copied = True
            self._event = torch.cuda.Event()
            self._event.record(side)
            self._device = device
        for opt in optimizers:
            self._hooks.append(opt.register_step_pre_hook(self._before_step))

    @property
    def deferred_bytes(self) -> int:
        return sum(s.numel() * s.element_size() for _, s in self._pending)

    def _before_step(self, optimizer, args, kwargs) -> None:
        # The hooks stay registered (removing one while the optimizer runs its hooks breaks
        # its iteration over them) and do nothing once released; `release()` from the loop
        # removes them.
        self._release()

    def _copy(self) -> None:
        with self._lock:
            if not self._copied:
                for dst, src in self._pending:
                    dst.copy_(src)
                self._copied = True

    def release(self) -> None:
        """Training thread: lets the optimizers change their tensors, and takes the hooks off
        them. Called before the loop waits for the write (the first optimizer step's
        pre-hook releases it earlier); idempotent."""
        self._release()
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def _release(self) -> None:
        if self._released.is_set():
            return
        t0 = time.perf_counter()
        changed = next((i for i, (_, src) in enumerate(self._pending)
                        if src._version != self._versions[i]), None)
        if changed is not None:
            src = self._pending[changed][1]
            self._stale = (f"a {tuple(src.shape)} tensor of an optimizer changed outside its "
                           f"step before the checkpoint's copy of it was taken")
        if self._event is not None:
            torch.cuda.current_stream(self._device).wait_event(self._event)
        else:
            self._copy()  # waits for the writer's copy, or makes it if the writer has not begun
        self.waited_ms = (time.perf_counter() - t0) * 1000
        self._released.set()

    def complete(self) -> Any:
        """Writer thread: the host copy, whole (copied here unless the loop copied it); it may
        be serialised now, but kept only once `verdict()` returns."""
        for event in self._queued:
            event.synchronize()
        if self._event is not None:
            self._event.synchronize()
        else:
            self._copy()
        return self.host

    def verdict(self) -> None:
        """Writer thread: waits for the loop's release; StaleSnapshot if an optimizer's tensor
        changed before its copy was taken."""
        self._released.wait()
        if self._stale:
            raise StaleSnapshot(self._stale)
