"""The guard behind "no network access is attempted in the tests" works in child processes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NETGUARD_LOG = Path(os.environ["GAND_NETGUARD_LOG"])  # set by conftest for the session


def test_a_child_process_cannot_reach_off_this_machine():
    before = NETGUARD_LOG.read_text() if NETGUARD_LOG.exists() else ""
    # 192.0.2.1 is TEST-NET-1 (documentation only); the guard refuses before any packet leaves.
    p = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('192.0.2.1', 80), 1)"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "network access refused in gand's tests" in p.stderr
    after = NETGUARD_LOG.read_text()
    assert after.startswith(before) and "192.0.2.1" in after[len(before):]
    NETGUARD_LOG.write_text(before)  # this attempt was the test's own; keep the session check clean
    # Loopback stays open: the real Redis and PostgreSQL are reached this way.
    ok = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 6379), 2).close()"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
