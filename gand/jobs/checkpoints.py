"""Which of a job's checkpoints can be continued from: the one test `gand resume` and the worker
both apply, so the step `resume` promises is the step the worker starts from.

A checkpoint is usable when its file is a regular file whose sha256 is the one recorded in its
row (`verify`, here, without torch) and torch reads it back with `weights_only=True`
(gand.engine.checkpoint.load, which calls `verify` first).
"""
from __future__ import annotations

import hashlib
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

from gand.errors import CheckpointError
from gand.store.models import Checkpoint


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, sha256: Optional[str]) -> None:
    """Raises CheckpointError unless `path` is a regular file matching `sha256` (when known)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError:
        raise CheckpointError(f"checkpoint {path} is missing") from None
    if not stat.S_ISREG(mode):  # a FIFO would block the reader forever
        raise CheckpointError(f"checkpoint {path} is not a regular file")
    if sha256 is None:
        return
    try:
        actual = sha256_of(path)
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e.strerror or e}") from None
    if actual != sha256:
        raise CheckpointError(f"checkpoint {path} does not match its recorded sha256 (corrupt "
                              f"or truncated)")


def newest_first(checkpoints: Iterable[Checkpoint]) -> list[Checkpoint]:
    return sorted(checkpoints, key=lambda c: (c.step, c.id), reverse=True)


def latest_usable(checkpoints: Iterable[Checkpoint],
                  load: Callable[[Checkpoint], Any],
                  skipped: Optional[Callable[[Checkpoint, CheckpointError], None]] = None
                  ) -> Optional[tuple[Checkpoint, Any]]:
    """The newest checkpoint that `load` accepts, with what it made of it; None if none does.

    `load` verifies and reads one checkpoint, raising CheckpointError when it cannot be used:
    the worker and `gand resume` both pass gand.engine.checkpoint.load (sha256, then torch's
    weights-only load), so they agree on which checkpoint a job continues from. `skipped`
    hears of each checkpoint passed over, and why.
    """
    for c in newest_first(checkpoints):
        try:
            state = load(c)
        except CheckpointError as e:
            if skipped is not None:
                skipped(c, e)
            continue
        return c, state
    return None


def none_usable(job_id: str, step: int, problems: list[str]) -> CheckpointError:
    """The refusal when a job that had progressed has no checkpoint to continue from."""
    why = problems[0] if problems else "it never wrote one"
    more = f" (and {len(problems) - 1} older)" if len(problems) > 1 else ""
    return CheckpointError(
        f"job {job_id[:12]} reached step {step} but has no checkpoint that verifies: "
        f"{why}{more}; `gand resume {job_id[:12]} --from-scratch` trains it again from step 0")
