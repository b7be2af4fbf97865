"""`gand worker --gpus …`: one supervisor per machine, one worker child per GPU slot.

The supervisor never imports torch, so it never initialises CUDA: each child is a fresh
`gand worker` process started with CUDA_VISIBLE_DEVICES naming its GPU by UUID (so a child sees
exactly one GPU, as cuda:0) before it imports torch. With --jobs-per-gpu K, K children share a
GPU, each capped to 1/K of its memory. A child that dies is started again after a backoff (its
job comes back through its lease, as any dead worker's does); a child that exits cleanly after
--max-jobs-per-child jobs is replaced at once (freeing whatever GPU memory it held); SIGTERM or
SIGINT is passed to every child, which checkpoints and requeues its job, and the supervisor
waits for them all.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

from gand_workers.gpus import Gpu

log = logging.getLogger("gand.supervisor")

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0  # seconds before a crashed child is started again
STABLE_SECONDS = 60.0                  # a child that ran this long resets its backoff


@dataclass
class Slot:
    """One child's place: a GPU (or none) and its share of it."""

    name: str                  # "gpu0/1": the second slot of GPU 0; "cpu2": the third CPU child
    gpu: Optional[Gpu] = None
    share: float = 1.0

    def env(self) -> dict[str, str]:
        env = {"GAND_WORKER_SLOT": self.name,
               "GAND_WORKER_GPUS": json.dumps([self.gpu.to_json(self.share)] if self.gpu else [])}
        if self.gpu is None:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU child on a GPU machine leaves GPUs alone
        else:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu.uuid
            env["GAND_GPU_MEMORY_FRACTION"] = f"{self.share:.6g}"
        return env


def slots(gpus: list[Gpu], jobs_per_gpu: int, cpu_children: int) -> list[Slot]:
    if gpus:
        return [Slot(f"gpu{g.index}/{k}", g, 1.0 / jobs_per_gpu)
                for g in gpus for k in range(jobs_per_gpu)]
    return [Slot(f"cpu{i}") for i in range(cpu_children)]


class Child:
    def __init__(self, slot: Slot, argv: list[str]):
        self.slot, self.argv = slot, argv
        self.proc: Optional[subprocess.Popen] = None
        self.started = 0.0
        self.backoff = BACKOFF_FIRST
        self.restart_at: Optional[float] = None
        self.done = False

    def start(self) -> None:
        env = {**os.environ, **self.slot.env()}
        self.proc = subprocess.Popen(self.argv, env=env)
        self.started, self.restart_at = time.monotonic(), None
        log.info("slot %s: started child %d", self.slot.name, self.proc.pid)


def supervise(child_args: list[str], slot_list: list[Slot], burst: bool) -> int:
    """Runs one child per slot until they are done (burst) or a signal drains them."""
    argv = [sys.executable, "-m", "gand", "worker", "--child", *child_args]
    children = [Child(s, argv) for s in slot_list]
    stopping = threading.Event()

    def forward(sig, _frame):
        stopping.set()
        for c in children:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for c in children:
        c.start()
    worst = 0
    while True:
        now = time.monotonic()
        for c in children:
            if c.done:
                continue
            if c.proc is not None and (code := c.proc.poll()) is not None:
                _exited(c, code, burst, stopping.is_set(), now)
                worst = max(worst, code if code > 0 else (1 if code < 0 else 0))
            if c.restart_at is not None and now >= c.restart_at and not stopping.is_set():
                c.start()
        if all(c.done for c in children):
            return 0 if stopping.is_set() or burst and worst == 0 else worst
        time.sleep(0.2)


def _exited(c: Child, code: int, burst: bool, stopping: bool, now: float) -> None:
    pid = c.proc.pid
    c.proc = None
    if stopping or (burst and code == 0):
        c.done = True  # drained, or its queues are empty
        log.info("slot %s: child %d exited %d", c.slot.name, pid, code)
        return
    if code == 0:
        # --max-jobs-per-child: recycled on purpose, so a new child starts at once.
        log.info("slot %s: child %d retired; starting a fresh one", c.slot.name, pid)
        c.restart_at, c.backoff = now, BACKOFF_FIRST
        return
    if now - c.started > STABLE_SECONDS:
        c.backoff = BACKOFF_FIRST
    log.warning("slot %s: child %d died (exit %d); restarting in %.0fs", c.slot.name, pid, code,
                c.backoff)
    c.restart_at = now + c.backoff
    c.backoff = min(c.backoff * 2, BACKOFF_MAX)
