"""Output paths a command will write (`--out`, `--plot`), checked before any work is done.

A path that names a folder where a file is wanted, a FIFO, or a folder that cannot be created
is one line naming the option and the path, before a model is loaded; a write that fails
later (a full disk) is one line too.
"""
from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from gand.errors import UsageError


def output_file(flag: str, path: Path) -> Path:
    """`path` as a file gand may write: not a folder or special file, in a folder that exists or
    can be created (the writer creates it)."""
    _printable(flag, path)
    mode = _mode(flag, path)
    if mode is not None and stat.S_ISDIR(mode):
        raise UsageError(f"{flag} {path} is a folder; expected a file path, e.g. "
                         f"{path / ('out' + (path.suffix or '.png'))}")
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(f"{flag} {path} exists and is not a regular file (a FIFO, socket or "
                         f"device); expected a file path")
    _folder(flag, path, path.parent)
    return path


def output_folder(flag: str, path: Path) -> Path:
    """`path` as a folder gand may create and fill."""
    _printable(flag, path)
    mode = _mode(flag, path)
    if mode is not None and not stat.S_ISDIR(mode):
        raise UsageError(f"{flag} {path} exists and is not a folder; expected a folder path")
    _folder(flag, path, path)
    return path


@contextlib.contextmanager
def writing(flag: str, path: Path) -> Iterator[None]:
    """Turns a failed write (a full disk, a file removed meanwhile) into one line."""
    try:
        yield
    except OSError as e:
        raise UsageError(f"{flag} {path}: could not write it: {e.strerror or e}") from None


def _printable(flag: str, path: Path) -> None:
    if not str(path).isprintable():
        raise UsageError(f"{flag} {str(path)!r} is invalid: it holds a control character")


def _mode(flag: str, path: Path) -> int | None:
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # not there (under a file: _folder says)
        return None
    except OSError as e:  # a loop of links, a name too long...
        raise UsageError(f"{flag} {path}: {e.strerror or e}") from None


def _folder(flag: str, path: Path, folder: Path) -> None:
    """Checks that `folder` exists or can be created, without creating anything yet (a
    command refused later must leave no empty folder behind)."""
    existing = folder.absolute()
    while True:
        mode = _mode(flag, existing)
        if mode is not None:
            break
        existing = existing.parent
    if not stat.S_ISDIR(mode):
        raise UsageError(f"{flag} {path}: cannot create folder {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot create or write in {folder}: {existing} is not "
                         f"writable")
