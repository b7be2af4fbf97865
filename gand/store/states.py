"""Job states and the one table of transitions between them.

Every status change goes through Store.transition, which checks a move against TRANSITIONS; the
table lives here, apart from the database code, so that it can be read (and tested) on its own.
"""
from __future__ import annotations

import enum

from gand.errors import UsageError, one_of


class JobStatus(str, enum.Enum):
    """Where a job is in its life; stored as its value in jobs.status."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelling = "cancelling"
    cancelled = "cancelled"
    recovering = "recovering"

    def __str__(self) -> str:
        # f-strings and error messages should read "running", not "JobStatus.running".
        return self.value


S = JobStatus

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    # failed: the job can be rejected before it ever runs (unknown variant, bad data spec).
    S.queued: frozenset({S.running, S.cancelled, S.failed}),
    # queued: a worker shutting down hands its job back; recovering: its lease ran out.
    S.running: frozenset({S.succeeded, S.failed, S.cancelling, S.queued, S.recovering}),
    # A cancel races with the end of training, so cancelling may still finish either way.
    S.cancelling: frozenset({S.cancelled, S.failed, S.succeeded, S.queued}),
    # The reaper either requeues a job whose worker died or gives up after too many tries.
    S.recovering: frozenset({S.queued, S.failed}),
    # A finished job is resumed (more steps, or after a failure) by queueing it again.
    S.succeeded: frozenset({S.queued}),
    S.failed: frozenset({S.queued}),
    S.cancelled: frozenset({S.queued}),
}

TERMINAL: frozenset[JobStatus] = frozenset({S.succeeded, S.failed, S.cancelled})
# A worker holds the job (and renews its lease) only in these states.
ACTIVE: frozenset[JobStatus] = frozenset({S.running, S.cancelling})

del S


def parse_status(text: str) -> JobStatus:
    """The JobStatus named by user input such as `gand list --status running`."""
    try:
        return JobStatus(text.strip().lower())
    except ValueError:
        raise UsageError(
            f"unknown status {text!r}; valid: {one_of(s.value for s in JobStatus)}") from None


def check_transition(expected: frozenset[JobStatus], to: JobStatus) -> None:
    """Raises ValueError when a caller asks for a move the table forbids: a bug, not user error."""
    bad = sorted(e.value for e in expected if to not in TRANSITIONS[e])
    if not expected or bad:
        raise ValueError(f"transition to {to} is not allowed from {one_of(bad) if bad else '(nothing)'}")
