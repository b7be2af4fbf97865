"""Engines configured for how gand uses each database, retrying SQLite's busy errors, and the
one place where a database that cannot be used becomes a one-line StoreUnavailable.

SQLite serves one machine with several worker processes and threads writing at once; WAL lets
readers go on while one writes, and the busy timeout makes a writer wait for its turn instead of
failing. PostgreSQL needs pre-ping, because a daemon's pooled connections outlive restarts, and
a connect timeout, because a server that drops packets would otherwise hang every command.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import random
import re
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (DatabaseError, DataError, IntegrityError, InterfaceError,
                            OperationalError, ProgrammingError)
from sqlalchemy.pool import StaticPool

from gand.errors import GandError, StoreUnavailable, UsageError

BUSY_TIMEOUT_MS = 30_000
LOCKED_RETRIES = 5
CONNECT_TIMEOUT_S = 10     # PostgreSQL: a server that never answers fails a command, not hangs it
MIN_FREE_BYTES = 1 << 20   # a new SQLite database is not started on a disk with less than this

P = ParamSpec("P")
R = TypeVar("R")


def parse_url(url: str) -> URL:
    """A database URL checked for what gand supports; a UsageError names what is wrong."""
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        parsed.port  # noqa: B018 - a non-numeric port fails here, not at the first connection
    except Exception as e:  # noqa: BLE001 - SQLAlchemy raises several kinds for a bad URL
        raise UsageError(f"database URL {redact(url)!r} is not valid: "
                         f"{one_line(str(e))}") from None
    if backend not in ("postgresql", "sqlite"):
        raise UsageError(f"database URL {redact(url)!r}: unsupported database {backend!r}; "
                         "use sqlite:///PATH or postgresql://...")
    return parsed


def redact(url: str | URL) -> str:
    """A database URL without its password, fit for messages and logs."""
    try:
        return (url if isinstance(url, URL) else make_url(url)).render_as_string(
            hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: hide what looks like one
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(url))


IDLE_IN_TRANSACTION_MS = 60_000


def make_engine(url: str) -> Engine:
    """An engine for a sqlite:// or postgresql:// URL (query options pass through to the driver)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "postgresql":
        # Bounded waits: a server that never answers fails the connect, and TCP keepalives
        # find one that vanished mid-query within about a minute. The URL's own values win.
        # A process frozen inside a transaction (SIGSTOP, a debugger) would hold its row locks
        # forever and stall every worker; the server ends such a session after a minute (gand's
        # own transactions last milliseconds).
        bounds = {"connect_timeout": CONNECT_TIMEOUT_S, "keepalives": 1, "keepalives_idle": 30,
                  "keepalives_interval": 10, "keepalives_count": 3,
                  "options": f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"}
        connect_args = {k: v for k, v in bounds.items() if k not in parsed.query}
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    database = parsed.database
    if database and database != ":memory:":
        path = Path(database).expanduser()
        sqlite_preflight(path, parsed)
        parsed = parsed.set(database=str(path))
        engine = create_engine(parsed, connect_args={"check_same_thread": False})
    else:
        # Each new connection to :memory: would be a new, empty database: share one.
        engine = create_engine(parsed, connect_args={"check_same_thread": False},
                               poolclass=StaticPool)
    event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # Set first: switching to WAL needs a moment of exclusive access and may have to wait.
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across application crashes in WAL mode, and much faster than FULL.
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Off by default in SQLite; on, so a row for a missing job fails as it does on PostgreSQL.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def sqlite_preflight(path: Path, url: URL) -> None:
    """Refuses, before SQLite touches anything, a database path it would fail on or hang on.

    SQLite would block forever opening a FIFO, and on a full disk it leaves a stray `-shm`
    file behind after failing; both are found here from the file system alone.
    """
    where = redact(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreUnavailable(f"database {where}: cannot create its folder {path.parent}: "
                               f"{e.strerror or e}") from None
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise StoreUnavailable(f"database {where}: cannot read {path}: {e.strerror or e}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise StoreUnavailable(f"database {where}: {path} is a folder, not a database file")
    if mode is not None and not stat.S_ISREG(mode):
        raise StoreUnavailable(f"database {where}: {path} is not a regular file (a FIFO, socket "
                               f"or device); point GAND_DATABASE_URL or GAND_HOME elsewhere")
    if mode is None:  # a new database: it needs a writable folder with room in it
        problem = folder_problem(path.parent)
        if problem:
            raise StoreUnavailable(f"database {where}: cannot create {path}: {problem}")
    elif not path.with_name(path.name + "-shm").exists():
        # WAL mode: the first connection creates NAME-shm beside the database, and on a full
        # or read-only disk fails half-way and leaves a broken one behind.
        problem = folder_problem(path.parent)
        if problem:
            raise StoreUnavailable(f"database {where}: cannot open {path}: {problem} (SQLite "
                                   f"needs to create {path.name}-shm beside it)")


def folder_problem(folder: Path) -> str | None:
    """Why SQLite could not create files in `folder` (read-only, full), or None."""
    try:
        st = os.statvfs(folder)
    except OSError:
        st = None
    if st is not None and st.f_flag & os.ST_RDONLY:
        return f"its folder {folder} is on a read-only file system"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} is not writable"
    if st is None:
        return None
    free = st.f_bavail * st.f_frsize
    if free < MIN_FREE_BYTES:
        return f"the disk holding {folder} is full ({free} bytes free)"
    return None


def one_line(text: str) -> str:
    return " ".join(text.split())


# Errors that say the database could not be used at all, as against a caller's bug (a
# constraint or SQL error, which keeps its traceback).
_UNUSABLE = (OperationalError, InterfaceError)


@contextlib.contextmanager
def store_errors(url: str | URL, doing: str) -> Iterator[None]:
    """Turns a database that cannot be reached, opened or written into a StoreUnavailable that
    names the URL (password hidden), what gand was doing, and the driver's reason."""
    try:
        yield
    except GandError:
        raise
    except (IntegrityError, ProgrammingError):
        raise  # gand's own bug (or a race it handles): keep the traceback
    except DataError as e:
        raise StoreUnavailable(f"database {redact(url)} refused a value while {doing}: "
                               f"{_reason(e)}") from None
    except (*_UNUSABLE, DatabaseError) as e:
        err = StoreUnavailable(f"database {redact(url)}: {doing} failed: {_reason(e)}"
                               + _hint(url, e))
        err.locked = isinstance(e, OperationalError) and is_locked(e)
        raise err from None
    except OverflowError as e:  # sqlite3 binding an int beyond 64 bits, before SQLAlchemy sees it
        raise StoreUnavailable(f"database {redact(url)} refused a value while {doing}: "
                               f"{e}") from None
    except OSError as e:  # the migration lock file, a folder
        raise StoreUnavailable(f"database {redact(url)}: {doing} failed: "
                               f"{e.strerror or e}" + _hint(url, e)) from None


def _reason(e: Exception) -> str:
    orig = getattr(e, "orig", None) or e
    return one_line(str(orig)) or type(orig).__name__


def _hint(url: str | URL, e: Exception) -> str:
    """For SQLite, what about the file's folder explains the failure, if anything does."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except Exception:  # noqa: BLE001
        return ""
    if parsed.get_backend_name() != "sqlite" or not parsed.database \
            or parsed.database == ":memory:":
        return ""
    if isinstance(e, OSError) and e.errno not in (errno.EACCES, errno.EROFS, errno.ENOSPC):
        return ""
    problem = folder_problem(Path(parsed.database).expanduser().parent)
    return f" ({problem})" if problem else ""


def is_locked(error: Exception) -> bool:
    if isinstance(error, StoreUnavailable):
        return getattr(error, "locked", False)
    message = str(getattr(error, "orig", error)).lower()
    return "database is locked" in message or "database is busy" in message


def retry_locked(fn: Callable[P, R]) -> Callable[P, R]:
    """Retries a whole transaction that SQLite refused with "database is locked".

    The busy timeout handles ordinary contention; this covers the cases SQLite reports at once
    (a reader whose snapshot went stale wanting to write). The wrapped function must open its
    own transaction, so that a retry starts from scratch.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(LOCKED_RETRIES):
            try:
                return fn(*args, **kwargs)
            except (OperationalError, StoreUnavailable) as e:
                if not is_locked(e) or attempt == LOCKED_RETRIES - 1:
                    raise
                # Jitter keeps the writers that collided from colliding again.
                time.sleep(0.05 * 2 ** attempt * (1 + random.random()))
        raise AssertionError("unreachable")

    return wrapper


def sqlite_files(url: str) -> list[Path]:
    """The files SQLite (and gand's migration lock) keep for a database file URL."""
    try:
        parsed = parse_url(url)
    except GandError:
        return []
    if parsed.get_backend_name() != "sqlite" or not parsed.database \
            or parsed.database == ":memory:":
        return []
    db = Path(parsed.database).expanduser()
    return [db.with_name(db.name + suffix) for suffix in ("", "-wal", "-shm", ".migrate-lock")]


STRAY_BYTES = 32 * 1024  # a working -shm file is at least this big; an empty database 0 bytes


def remove_strays(created: list[Path]) -> None:
    """Removes what a failed open created: an empty database, a broken -shm, an empty -wal.

    Only files that did not exist before this open and hold nothing: another process's live
    database is never touched."""
    for f in created:
        with contextlib.suppress(OSError):
            if f.is_file() and f.stat().st_size < STRAY_BYTES \
                    and (f.name.endswith("-shm") or f.stat().st_size == 0):
                f.unlink()
