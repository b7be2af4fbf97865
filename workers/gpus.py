"""The GPUs of this machine, found without initialising CUDA, and which of them a worker uses.

The supervisor must never initialise CUDA itself (a forked or later CUDA_VISIBLE_DEVICES would
not take), so it asks `nvidia-smi` rather than torch. GAND_FAKE_GPUS lists GPUs for tests and
drills on machines without them: `UUID:NAME:MEMORY_MB,…` (e.g. `GPU-aaaa:Fake A100:40960`).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass

from gand.errors import UsageError

QUERY = ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mb: int

    def to_json(self, share: float = 1.0) -> dict:
        return {**asdict(self), "share": share}


def discover() -> list[Gpu]:
    """This machine's GPUs (GAND_FAKE_GPUS first, then nvidia-smi; none if neither)."""
    fake = os.environ.get("GAND_FAKE_GPUS", "").strip()
    if fake:
        return _parse_fake(fake)
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, *QUERY], capture_output=True, text=True, timeout=20,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        index, uuid, name, memory = (part.strip() for part in line.split(","))
        gpus.append(Gpu(int(index), uuid, name, int(float(memory))))
    return gpus


def _parse_fake(text: str) -> list[Gpu]:
    gpus = []
    for i, item in enumerate(text.split(",")):
        parts = item.strip().split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise UsageError(f"GAND_FAKE_GPUS item {item!r} is invalid; expected "
                             f"UUID:NAME:MEMORY_MB")
        gpus.append(Gpu(i, parts[0], parts[1], int(parts[2])))
    return gpus


def select(spec: str, found: list[Gpu]) -> list[Gpu]:
    """The GPUs `--gpus SPEC` names: all, none, or a comma-separated list of indexes."""
    spec = spec.strip().lower()
    if spec == "none":
        return []
    if spec == "all":
        if not found:
            raise UsageError("--gpus all: this machine has no GPU that nvidia-smi reports; use "
                             "--gpus none for CPU workers")
        return found
    try:
        wanted = [int(x) for x in spec.split(",")]
    except ValueError:
        raise UsageError(f"--gpus {spec!r} is invalid; expected all, none or GPU indexes such "
                         f"as 0,1") from None
    by_index = {g.index: g for g in found}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        have = ", ".join(str(g.index) for g in found) or "none"
        raise UsageError(f"--gpus {spec}: no GPU {missing[0]} on this machine (GPUs: {have})")
    return [by_index[i] for i in dict.fromkeys(wanted)]
