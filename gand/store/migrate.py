"""Brings a database to the newest schema, once, however many processes start at the same time.

Every gand process (CLI, worker, reaper) calls upgrade() on start-up, so the common case, a
database already at head, costs one small query, and does not even import Alembic (a tenth of
a second that `gand list` would pay on every call): HEAD names the newest revision, and a test
checks it against the migration scripts. On a fresh database several workers race: each
takes a lock that the database or its file provides, checks the revision again, and only the
first one migrates.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import zlib
from collections.abc import Iterator
from pathlib import Path

from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from gand.errors import GandError

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision under migrations/versions; tests/test_store.py checks that they agree.
HEAD = "0004"

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock takes a bigint; any fixed number that other software is unlikely to use.
PG_LOCK_KEY = zlib.crc32(b"gand.store.migrate")


def alembic_config() -> "Config":
    """Alembic's configuration, built in code so that no alembic.ini is needed at run time."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@functools.cache
def head_revisions() -> frozenset[str]:
    """The newest revision(s) the code knows; read once, since it parses every migration file."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(conn: Connection) -> frozenset[str]:
    """The revision(s) the database says it is at; empty for a fresh database."""
    from alembic.runtime.migration import MigrationContext

    return frozenset(MigrationContext.configure(conn).get_current_heads())


def upgrade(engine: Engine) -> None:
    """Migrates the database behind `engine` to head; a cheap no-op when it is there already."""
    with engine.connect() as conn:
        if _quick_at_head(conn) or _at_head(conn):
            return
    with _lock(engine) as conn:
        # Whoever held the lock before us may have done the work already.
        if _at_head(conn):
            return
        from alembic import command

        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _quick_at_head(conn: Connection) -> bool:
    """True when alembic_version holds exactly HEAD; False when unsure (Alembic then decides)."""
    try:
        with conn.begin_nested() if conn.in_transaction() else conn.begin():
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:
        return False  # no table yet: a fresh database
    return [r[0] for r in rows] == [HEAD]


def _at_head(conn: Connection) -> bool:
    current = current_revisions(conn)
    heads = head_revisions()
    if current == heads:
        return True
    from alembic.script import ScriptDirectory

    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    unknown = current - known
    if unknown:
        raise GandError(
            f"the database is at schema revision {', '.join(sorted(unknown))}, which this gand "
            f"does not know (its newest is {', '.join(sorted(heads))}); upgrade gand")
    return False


@contextlib.contextmanager
def _lock(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that no other migrating process can enter at once."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        with engine.begin() as conn:
            # Released by the commit or rollback, so a crash cannot leave it held.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            yield conn
    elif dialect == "sqlite":
        with _file_lock(engine.url.database), engine.begin() as conn:
            # pysqlite would run each CREATE outside a transaction; BEGIN IMMEDIATE makes the whole
            # migration one write transaction, so a crash leaves the old schema, not half a new one.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn
    else:
        raise GandError(f"unsupported database {dialect!r}; gand supports postgresql or sqlite")


@contextlib.contextmanager
def _file_lock(database: str | None) -> Iterator[None]:
    if not database or database == ":memory:":
        yield  # a private in-memory database: no other process can see it
        return
    # A separate file: locking the database file itself would fight SQLite's own locks.
    path = Path(database).with_name(Path(database).name + ".migrate-lock")
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
