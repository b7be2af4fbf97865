"""Fixtures: an isolated GAND_HOME, the real brokers and databases, real CLI processes.

The helpers behind them live in tests/support.py, which test modules import; nothing imports
this file.
"""
from __future__ import annotations

import os
import sys
import tempfile
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

from support import (PG_URL, REDIS_URL, Gand, InProcessCli, drop_schema, make_env,  # noqa: E402
                     pg_available, redis_available, trained_classifier)


@pytest.fixture(autouse=True, scope="session")
def no_network_access():
    """Fails the session if any test process tried to reach an address off this machine."""
    yield
    attempts = NETGUARD_LOG.read_text() if NETGUARD_LOG.exists() else ""
    assert not attempts, f"network access was attempted during the tests:\n{attempts}"


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


@pytest.fixture
def gand_inprocess(gand) -> InProcessCli:
    """`gand` commands run in this process with the `gand` fixture's environment and home."""
    return InProcessCli(gand)


@pytest.fixture(scope="session")
def registry():
    """Every installed plugin, loaded once for the session."""
    from gand import plugins

    return plugins.load()


@pytest.fixture(scope="session")
def mnist_classifier(tmp_path_factory) -> str:
    """gand's MNIST classifier, trained once per session (two epochs, in this process)."""
    return trained_classifier(tmp_path_factory.getbasetemp())


@pytest.fixture
def one_thread():
    """One torch thread for in-process training: beside a worker on two cores, more only spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
