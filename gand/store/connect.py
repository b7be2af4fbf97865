"""Engines configured for how gand uses each database, and retrying SQLite's busy errors.

SQLite serves one machine with several worker processes and threads writing at once; WAL lets
readers go on while one writes, and the busy timeout makes a writer wait for its turn instead of
failing. PostgreSQL needs only pre-ping, because a daemon's pooled connections outlive restarts.
"""
from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from gand.errors import UsageError

BUSY_TIMEOUT_MS = 30_000
LOCKED_RETRIES = 5

P = ParamSpec("P")
R = TypeVar("R")


def make_engine(url: str) -> Engine:
    """An engine for a sqlite:// or postgresql:// URL (query options pass through to the driver)."""
    try:
        parsed = make_url(url)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy raises several kinds for a bad URL
        raise UsageError(f"database URL {url!r} is not valid: {e}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return create_engine(parsed, pool_pre_ping=True)
    if backend != "sqlite":
        raise UsageError(f"database URL {url!r}: unsupported database {backend!r}; "
                         "use sqlite:///PATH or postgresql://...")
    database = parsed.database
    if database and database != ":memory:":
        path = Path(database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
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


def is_locked(error: OperationalError) -> bool:
    message = str(error.orig).lower()
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
            except OperationalError as e:
                if not is_locked(e) or attempt == LOCKED_RETRIES - 1:
                    raise
                # Jitter keeps the writers that collided from colliding again.
                time.sleep(0.05 * 2 ** attempt * (1 + random.random()))
        raise AssertionError("unreachable")

    return wrapper
