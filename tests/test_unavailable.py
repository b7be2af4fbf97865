"""The store or the broker cannot be used: one line naming what failed (the database URL with
its password hidden), a non-zero exit, nothing left behind, and never a wait without end.

Real failures, not mocks: PostgreSQL refusing or missing a database, SQLite paths that are
folders or not databases, a read-only and a full tmpfs for GAND_HOME (root only; skipped
elsewhere), a TCP port that accepts and never answers, a port where nothing listens.
"""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support import (Gand, assert_refused, can_mount, cli, fill_disk, make_env, pg_available,
                     queued_messages, remount_read_only, run_gand, tmpfs)

S = ["submit", "gan", "--data", "ring8"]


@pytest.fixture
def fresh(tmp_path):
    """A Gand setup of its own (these tests break its home or its database)."""
    g = Gand(tmp_path, make_env(tmp_path, "filesystem", "sqlite"))
    yield g
    g.stop_workers()


class SilentServer:
    """A TCP port that accepts connections and never says a word (a hung server, a black hole
    on this machine)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


def test_a_database_or_broker_that_never_answers_fails_in_bounded_time(fresh):
    """Every network wait of the CLI has a timeout: PostgreSQL's connect (10 s), the broker
    check (3 s a try)."""
    server = SilentServer()
    try:
        for env, message, limit in (
                ({"GAND_DATABASE_URL": f"postgresql+psycopg2://u:pw@127.0.0.1:{server.port}/x"},
                 "timeout expired", 40),
                ({"GAND_BROKER_URL": f"redis://127.0.0.1:{server.port}/0"},
                 "cannot reach the broker", 40)):
            t0 = time.monotonic()
            p = run_gand(fresh, *S, "--steps", "5", env=env, timeout=120)
            assert_refused(p.returncode, p.stdout, p.stderr, message)
            assert time.monotonic() - t0 < limit, f"took {time.monotonic() - t0:.0f}s"
            assert "pw" not in p.stderr
    finally:
        server.close()


def test_burst_worker_gives_up_on_a_broker_that_is_down(fresh):
    """`gand worker --burst` with no broker: one line within GAND_BROKER_TIMEOUT, not forever."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()  # a port nothing listens on
    t0 = time.monotonic()
    p = run_gand(fresh, "worker", "--burst", timeout=120,
                 env={"GAND_BROKER_URL": f"redis://127.0.0.1:{port}/0", "GAND_BROKER_TIMEOUT": "5"})
    assert p.returncode != 0
    assert p.stderr.strip().splitlines()[-1].startswith("gand: error: cannot reach the broker")
    assert "GAND_BROKER_TIMEOUT" in p.stderr and "Traceback" not in p.stderr
    assert time.monotonic() - t0 < 60


# --- the store cannot be reached or written ---------------------------------------------------
def _stray(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("gand.db*"))


STORE = [
    # (GAND_DATABASE_URL, what the one line says)
    ("postgresql+psycopg2://postgres:secret@127.0.0.1:1/x", "Connection refused"),
    ("postgresql+psycopg2://postgres@127.0.0.1:5432/gand_no_such_db", "does not exist"),
    ("sqlite:///{root}/dbdir", "is a folder, not a database file"),
    ("sqlite:///{root}/notadb", "file is not a database"),
    ("sqlite:///{root}/afile/gand.db", "cannot create its folder"),
]


@pytest.mark.parametrize("url,message", STORE, ids=[u.split("//")[1][:30] for u, _ in STORE])
@pytest.mark.parametrize("command", [["list"], S + ["--steps", "5"], ["show", "ffff"]],
                         ids=["list", "submit", "show"])
def test_store_unavailable_is_one_line_naming_the_url(fresh, url, message, command):
    if "5432" in url and not pg_available():
        pytest.skip("PostgreSQL is not running")
    (fresh.home / "dbdir").mkdir(exist_ok=True)
    (fresh.home / "notadb").write_text("this is not SQLite\n" * 100)
    (fresh.home / "afile").write_text("x")
    url = url.replace("{root}", str(fresh.home))
    code, out, err = cli(fresh, *command, env={"GAND_DATABASE_URL": url})
    assert_refused(code, out, err, message)
    assert "database " in err and "secret" not in err
    shown = url.replace(":secret@", ":***@")
    assert shown in err, "the message names the database URL, password hidden"
    assert not queued_messages(fresh)


def test_store_on_a_read_only_home_is_one_line(fresh, tmp_path):
    """Read-only GAND_HOME: a new database cannot be made, an existing one cannot be opened
    for writing (SQLite's WAL needs its -shm file) — even `gand list` says so in one line."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        code, out, err = cli(fresh, "list", env={"GAND_HOME": str(ro)})
        assert_refused(code, out, err, "not writable")
        return
    if not can_mount():
        pytest.skip("needs mount")
    with tmpfs(tmp_path / "ro", "4m") as ro:
        code, out, err = cli(fresh, "list", env={"GAND_HOME": str(ro)})
        assert code == 0, err  # writable for now: the database is created
        remount_read_only(ro)
        code, out, err = cli(fresh, "list", env={"GAND_HOME": str(ro)})
        assert_refused(code, out, err, f"sqlite:///{ro}/gand.db")
        code, out, err = cli(fresh, *S, "--steps", "5", env={"GAND_HOME": str(ro)})
        assert_refused(code, out, err, "Read-only file system")  # the broker's folder, first
        subprocess.run(["mount", "-o", "remount,rw", str(ro)], check=True)
        (ro / "fresh").mkdir()
        remount_read_only(ro)
        code, out, err = cli(fresh, "list", env={"GAND_HOME": str(ro / "fresh")})
        assert_refused(code, out, err, "read-only file system")
        assert _stray(ro / "fresh") == []


def test_store_on_a_full_disk_is_one_line_and_leaves_no_files(fresh, tmp_path):
    if not can_mount():
        pytest.skip("needs root to mount a small tmpfs")
    with tmpfs(tmp_path / "full", "2m") as full:
        (full / "old").mkdir()
        code, _, err = cli(fresh, "list", env={"GAND_HOME": str(full / "old")})
        assert code == 0, err
        fill_disk(full)
        # A new database on a full disk: refused before SQLite creates anything.
        code, out, err = cli(fresh, "list", env={"GAND_HOME": str(full / "new")})
        assert_refused(code, out, err, "is full")
        assert _stray(full / "new") == [], "no stray gand.db, gand.db-shm or -wal"
        # An existing database (closed, so SQLite removed its -shm): reopening it needs a new
        # -shm, which SQLite would leave behind broken; refused first, for reads and writes.
        for command in (["list"], S + ["--steps", "5"]):
            code, out, err = cli(fresh, *command, env={"GAND_HOME": str(full / "old")})
            assert_refused(code, out, err, "is full")
            assert "gand.db-shm" not in _stray(full / "old")
        (full / "filler").unlink()
        from gand.store import Store

        store = Store(f"sqlite:///{full / 'old' / 'gand.db'}")
        try:
            assert store.count_rows()["jobs"] == 0  # nothing half-written
        finally:
            store.close()
