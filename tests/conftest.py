"""Shared fixtures: an isolated GAND_HOME, the real brokers and databases, real CLI processes.

Nothing is mocked: jobs go through a real Celery broker (kombu's filesystem transport, or the
Redis server at 127.0.0.1:6379 in its own database number) into real `gand worker --burst`
processes, and the store is a real SQLite file or the PostgreSQL server at 127.0.0.1:5432.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# The network guard (tests/netguard/sitecustomize.py) in this process and every one it starts.
NETGUARD_LOG = Path(tempfile.mkdtemp(prefix="gand-netguard-")) / "attempts.log"
os.environ["GAND_NETGUARD_LOG"] = str(NETGUARD_LOG)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "tests" / "netguard")] + [p for p in [os.environ.get("PYTHONPATH")] if p])
sys.path.insert(0, str(ROOT / "tests" / "netguard"))
import sitecustomize  # noqa: E402,F401  (the guard, for this process)
MNIST = ROOT / "tests" / "data" / "mnist"  # gand's own copy of the MNIST test split
REDIS_URL = os.environ.get("GAND_TEST_REDIS", "redis://127.0.0.1:6379/13")
PG_URL = os.environ.get("GAND_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True, scope="session")
def no_network_access():
    """Fails the session if any test process tried to reach an address off this machine."""
    yield
    attempts = NETGUARD_LOG.read_text() if NETGUARD_LOG.exists() else ""
    assert not attempts, f"network access was attempted during the tests:\n{attempts}"


def redis_available() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


def pg_available() -> bool:
    try:
        import sqlalchemy as sa

        sa.create_engine(PG_URL, connect_args={"connect_timeout": 2}).connect().close()
        return True
    except Exception:
        return False


class Gand:
    """Runs the real `gand` CLI and workers in subprocesses against one isolated setup."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.env = env
        self.workers: list[subprocess.Popen] = []

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "gand", *args], env=self.env, capture_output=True,
                           text=True, timeout=timeout, cwd=self.home)
        if check and p.returncode != 0:
            raise AssertionError(f"gand {' '.join(args)} exited {p.returncode}\n"
                                 f"stdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def json(self, *args: str) -> object:
        return json.loads(self.run(*args, "--json").stdout)

    def submit(self, *args: str) -> str:
        return self.json("submit", *args)["id"]

    def worker(self, *args: str, burst: bool = True) -> subprocess.Popen:
        log = open(self.home / f"worker-{len(self.workers)}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "gand", "worker", *(["--burst"] if burst else []), *args],
                             env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.home,
                             start_new_session=True)
        self.workers.append(p)
        return p

    def worker_log(self, i: int = -1) -> str:
        n = len(self.workers) + i if i < 0 else i
        return (self.home / f"worker-{n}.log").read_text()

    def wait_job(self, job_id: str, statuses: set[str], timeout: float = 180, step_at_least: int = 0) -> dict:
        """Polls `gand show` until the job is in one of `statuses` (and at a step)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.json("show", job_id)
            if job["status"] in statuses and job["step"] >= step_at_least:
                return job
            if time.monotonic() > deadline:
                logs = "\n".join(self.worker_log(i) for i in range(len(self.workers)))
                raise AssertionError(f"job {job_id} is {job['status']} at step {job['step']} after "
                                     f"{timeout}s, wanted {statuses}\n{logs}")
            time.sleep(0.3)

    def stop_workers(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def make_env(home: Path, broker: str, database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAND_")}
    env.update({
        "GAND_HOME": str(home),
        "GAND_CONFIG": str(home / "config.toml"),
        "GAND_LEASE_SECONDS": "4",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",  # two cores: workers and the test share them
    })
    if broker == "redis":
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        env["GAND_BROKER_URL"] = REDIS_URL
    if database == "postgres":
        env["GAND_DATABASE_URL"] = database_url_for_schema(home)
    return env


def database_url_for_schema(home: Path) -> str:
    """A fresh PostgreSQL schema for one test, so tests never see each other's rows."""
    import sqlalchemy as sa

    schema = f"gand_t_{uuid.uuid4().hex[:10]}"
    eng = sa.create_engine(PG_URL)
    with eng.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    (home / "pg_schema").write_text(schema)
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


def drop_schema(home: Path) -> None:
    f = home / "pg_schema"
    if f.exists():
        import sqlalchemy as sa

        eng = sa.create_engine(PG_URL)
        with eng.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{f.read_text()}" CASCADE'))
        eng.dispose()


@pytest.fixture
def gand_factory(tmp_path):
    made: list[Gand] = []

    def make(broker: str = "filesystem", database: str = "sqlite") -> Gand:
        if broker == "redis" and not redis_available():
            pytest.skip(f"Redis not reachable at {REDIS_URL}")
        if database == "postgres" and not pg_available():
            pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
        home = tmp_path / f"home{len(made)}"
        home.mkdir()
        g = Gand(home, make_env(home, broker, database))
        made.append(g)
        return g

    yield make
    for g in made:
        g.stop_workers()
        drop_schema(g.home)


@pytest.fixture
def gand(gand_factory) -> Gand:
    """The embedded default: filesystem broker and SQLite under GAND_HOME."""
    return gand_factory()


class InProcessGand:
    """The real `gand` entry point called in this process (no interpreter start-up per command)
    against the same GAND_HOME as a `Gand`, whose real workers can then run what it submits."""

    def __init__(self, gand: Gand, capsys):
        self.gand = gand
        self.home = gand.home
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        """Runs `gand ARGS`; returns (exit code, stdout, stderr)."""
        from gand.cli.main import main

        self.capsys.readouterr()
        try:
            main(list(args))
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        out = self.capsys.readouterr()
        return rc, out.out, out.err

    def ok(self, *args: str) -> str:
        rc, out, err = self(*args)
        assert rc == 0, f"gand {' '.join(args)} exited {rc}: {err}"
        return out

    def json(self, *args: str):
        return json.loads(self.ok(*args, "--json"))

    def rows(self) -> dict[str, int]:
        from gand.cli import context

        return context.store().count_rows()


def _forget_cli_caches() -> None:
    from gand.cli import context

    context.reset()


@pytest.fixture
def gand_inprocess(gand, monkeypatch, capsys) -> InProcessGand:
    """`gand` commands run in-process with the `gand` fixture's environment and home."""
    for key in [k for k in os.environ if k.startswith("GAND_")]:
        monkeypatch.delenv(key)
    for key, value in gand.env.items():
        if key.startswith("GAND_"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(gand.home)
    # Process-wide caches made from another test's settings: the Celery app (its broker), the
    # plugin registry (its allowlist) and the CLI's store and settings.
    from gand import plugins, queue

    monkeypatch.setattr(queue, "_app", None)
    monkeypatch.setattr(plugins, "_cached", None)
    _forget_cli_caches()
    yield InProcessGand(gand, capsys)
    _forget_cli_caches()


@pytest.fixture
def one_thread():
    """One torch thread for in-process training: beside a worker on two cores, more only spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def wait_succeeded(g: Gand, store, job_id: str, step: int, timeout: float = 150):
    """Polls the store (cheaper than `gand show` subprocesses) until the job succeeded at `step`."""
    deadline = time.monotonic() + timeout
    while True:
        job = store.get_job(job_id)
        status = getattr(job.status, "value", job.status)
        if status == "succeeded" and job.step >= step:
            return job
        assert status not in ("failed", "cancelled"), f"{status}: {job.error}\n{g.worker_log()}"
        assert time.monotonic() < deadline, f"{status} at step {job.step}\n{g.worker_log()}"
        time.sleep(0.2)
