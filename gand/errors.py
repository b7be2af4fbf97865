"""Every error gand raises on purpose derives from GandError.

The CLI prints a GandError as one line and exits non-zero; anything else is a bug and keeps its
traceback. Messages name the offending value and what would be valid.
"""


class GandError(Exception):
    """A mistake or condition the user can act on."""

    exit_code = 1


class UsageError(GandError):
    """A bad value in a command, option, spec or config: nothing has been changed."""

    exit_code = 2


class NotFound(GandError):
    """A job, checkpoint, plugin or dataset that does not exist."""


class StateError(GandError):
    """An operation the job's current state does not allow (e.g. resume a running job)."""


class TransitionRejected(StateError):
    """A compare-and-set transition found the job in another state than expected."""


class BrokerUnavailable(GandError):
    """The message broker could not be reached."""


class StoreUnavailable(GandError):
    """The database could not be reached, opened, migrated or written (a server down, a file
    that is not a database, a read-only or full disk...): nothing has been changed."""


class CheckpointError(GandError):
    """A checkpoint is missing, corrupt, or could not be written."""


class PluginError(GandError):
    """A plugin broke a contract (duplicate name, bad registration)."""


def one_of(values) -> str:
    """Formats valid choices for an error message: 'a, b or c'."""
    values = sorted(str(v) for v in values)
    if not values:
        return "(none)"
    if len(values) == 1:
        return values[0]
    return ", ".join(values[:-1]) + " or " + values[-1]
