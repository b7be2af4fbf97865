"""Brings a database to the newest schema, once, however many processes start at the same time.

Every gand process (CLI, worker, reaper) calls upgrade() on start-up, so the common case, a
database already at head, costs one small query. On a fresh database several workers race: each
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

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from gand.errors import GandError

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock takes a bigint; any fixed number that other software is unlikely to use.
PG_LOCK_KEY = zlib.crc32(b"gand.store.migrate")


def alembic_config() -> Config:
    """Alembic's configuration, built in code so that no alembic.ini is needed at run time."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@functools.cache
def head_revisions() -> frozenset[str]:
    """The newest revision(s) the code knows; read once, since it parses every migration file."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(conn: Connection) -> frozenset[str]:
    """The revision(s) the database says it is at; empty for a fresh database."""
    return frozenset(MigrationContext.configure(conn).get_current_heads())


def upgrade(engine: Engine) -> None:
    """Migrates the database behind `engine` to head; a cheap no-op when it is there already."""
    with engine.connect() as conn:
        if _at_head(conn):
            return
    with _lock(engine) as conn:
        # Whoever held the lock before us may have done the work already.
        if _at_head(conn):
            return
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _at_head(conn: Connection) -> bool:
    current = current_revisions(conn)
    heads = head_revisions()
    if current == heads:
        return True
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
