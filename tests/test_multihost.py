"""A fleet of machines on one machine: network namespaces as hosts, a lost host, nothing lost.

Each host is a Linux network namespace with its own address and its own hostname (a UTS
namespace), running `gand worker` exactly as docs/fleet.md tells a worker machine to; Redis (with
a password) and a throw-away PostgreSQL cluster run in a namespace of their own. The test submits
jobs from the root namespace, then SIGKILLs every process of one host at once, as a machine that
is switched off: its jobs finish on the other host at their total from their last checkpoint,
`gand workers` marks the host lost, and no step range was trained by two owners at once.
Traffic goes only to addresses inside the namespaces this test made (the network guard is told
so through GAND_NETGUARD_ALLOW). Needs root and `ip netns`; skipped with the reason otherwise.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from support import wait_for

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None) \
    if Path("/usr/lib/postgresql").is_dir() else None
PASSWORD = "fleet-secret"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


def why_not_possible() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "unshare", "redis-server", "runuser"):
        if not shutil.which(tool):
            return f"needs {tool}"
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        return "needs PostgreSQL's initdb"
    probe = f"gandprobe{uuid.uuid4().hex[:6]}"
    if sh("ip", "netns", "add", probe, check=False).returncode != 0:
        return "cannot create network namespaces here"
    sh("ip", "netns", "del", probe, check=False)
    return None


class Net:
    """A bridge in the root namespace and one namespace per host, each with a veth into it."""

    def __init__(self, tag: str, subnet: int):
        self.tag, self.prefix = tag, f"10.231.{subnet}"
        self.bridge = f"gbr{tag}"
        self.hosts: dict[str, str] = {}  # namespace -> address
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    @property
    def cidr(self) -> str:
        return f"{self.prefix}.0/24"

    def add(self, name: str, last_octet: int) -> str:
        ns, outside, inside = f"gand-{name}-{self.tag}", f"gv{self.tag}{last_octet}", "eth0"
        address = f"{self.prefix}.{last_octet}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", f"gp{self.tag}{last_octet}")
        sh("ip", "link", "set", f"gp{self.tag}{last_octet}", "netns", ns)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", f"gp{self.tag}{last_octet}", "name",
           inside)
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", inside)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "set", outside, "master", self.bridge)
        sh("ip", "link", "set", outside, "up")
        self.hosts[ns] = address
        return ns

    def kill_all(self, ns: str) -> None:
        """SIGKILL every process in a namespace at once: the machine is switched off."""
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for ns in self.hosts:
            self.kill_all(ns)
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)


@pytest.fixture
def fleet(tmp_path):
    reason = why_not_possible()
    if reason:
        print(f"SKIPPED test_multihost: {reason}")
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:4]
    net = Net(tag, 100 + int(tag, 16) % 100)
    procs: list[subprocess.Popen] = []
    cleanup: list[Path] = []
    try:
        svc = net.add("svc", 2)
        broker = f"{net.prefix}.2"
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", svc, "redis-server", "--bind", broker, "--port", "6390",
             "--requirepass", PASSWORD, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # Outside pytest's folders, which only root may enter: the server runs as postgres.
        pgdata = Path(tempfile.mkdtemp(prefix="gand-pg-"))
        cleanup.append(pgdata)
        shutil.chown(pgdata, "postgres", "postgres")
        sh("runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(pgdata),
           "--auth=trust", "-U", "postgres")
        with open(pgdata / "pg_hba.conf", "a") as f:
            f.write(f"host all all {net.cidr} trust\n")
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", svc, "runuser", "-u", "postgres", "--",
             str(PG_BIN / "postgres"), "-D", str(pgdata), "-c", f"listen_addresses={broker}",
             "-c", "port=5440", "-c", f"unix_socket_directories={pgdata}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: sh(str(PG_BIN / "pg_isready"), "-h", broker, "-p", "5440",
                            check=False).returncode == 0, 60, "PostgreSQL in its namespace")
        shared = tmp_path / "artifacts"  # stands for the NFS mount every host sees
        shared.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GAND_")}
        env.update({
            "GAND_BROKER_URL": f"redis://:{PASSWORD}@{broker}:6390/0",
            "GAND_DATABASE_URL": f"postgresql+psycopg2://postgres@{broker}:5440/postgres",
            "GAND_ARTIFACTS": str(shared), "GAND_LEASE_SECONDS": "4",
            "GAND_CONFIG": str(tmp_path / "none.toml"), "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1", "GAND_NETGUARD_LOG": os.environ["GAND_NETGUARD_LOG"],
            "GAND_NETGUARD_ALLOW": net.cidr,
        })
        yield net, env, tmp_path, procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        net.close()
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)


def start_host(net: Net, name: str, octet: int, env: dict, home: Path, procs: list) -> str:
    """A worker machine: its own namespace, hostname and scratch home; the documented command."""
    ns = net.add(name, octet)
    host_env = {**env, "GAND_HOME": str(home / name)}
    log = open(home / f"{name}.log", "w")
    procs.append(subprocess.Popen(
        ["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c",
         f'hostname {name} && exec "$0" -m gand worker --gpus none --concurrency 1',
         sys.executable], env=host_env, stdout=log, stderr=subprocess.STDOUT))
    return ns


def gand(env: dict, home: Path, *args: str) -> object:
    p = subprocess.run([sys.executable, "-m", "gand", *args, "--json"],
                       env={**env, "GAND_HOME": str(home / "client")}, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_a_lost_host_loses_nothing(fleet):
    net, env, home, procs = fleet
    # Batch 64 rather than the ring8 recipe's 2048: each job still trains for a while (host-a
    # must be killed in the middle of one), at a quarter of the CPU.
    jobs = [gand(env, home, "submit", "gan", "--data", "ring8", "--steps", "2400",
                 "--batch-size", "64", "--checkpoint-every", "100", "--sample-every", "0",
                 "--seed", str(i))["id"]
            for i in range(3)]
    host_a = start_host(net, "host-a", 11, env, home, procs)
    wait_for(lambda: any(w["host"] == "host-a" and w["state"] == "busy"
                         for w in gand(env, home, "workers")), 180, "host-a to take a job")
    start_host(net, "host-b", 12, env, home, procs)
    # host-a has a checkpoint of the job it runs (host-b may have started another by now).
    on_a = wait_for(lambda: next((j for j in (gand(env, home, "show", i) for i in jobs)
                                  if (j["worker"] or "").endswith("@host-a")
                                  and j["checkpoints"]), None), 180, "a checkpoint on host-a")
    net.kill_all(host_a)  # every process of host-a at once
    killed_at = time.time()

    def finished():
        shown = [gand(env, home, "show", i) for i in jobs]
        return shown if all(j["status"] in ("succeeded", "failed") for j in shown) else None
    done = wait_for(finished, 420, "every job to finish on host-b", interval=2)
    assert [(j["status"], j["step"]) for j in done] == [("succeeded", 2400)] * 3, \
        (home / "host-b.log").read_text()[-3000:]
    recovered = next(j for j in done if j["id"] == on_a["id"])
    assert recovered["recoveries"] == 1
    moves = [(e["from_status"], e["to_status"]) for e in recovered["events"]]
    assert ("running", "recovering") in moves and ("recovering", "queued") in moves
    # It went on from host-a's last checkpoint (at least the one seen before the kill), on host-b.
    last_a = max(c["step"] for c in on_a["checkpoints"])
    claims = [e for e in recovered["events"] if e["reason"] == "claimed"]
    assert claims[0]["worker"].endswith("@host-a") and claims[-1]["worker"].endswith("@host-b")
    # No step range trained by two owners at once: each attempt's rows end before the next
    # attempt's begin, and the new owner started right after host-a's last checkpoint.
    rows = [r for r in gand(env, home, "metrics", recovered["id"], "--all-attempts")
            if r["key"] == "g_loss"]
    spans = {}
    for r in rows:
        first, last = spans.get(r["epoch"], (r, r))
        spans[r["epoch"]] = (min(first, r, key=lambda x: x["time"]),
                             max(last, r, key=lambda x: x["time"]))
    epochs = sorted(spans)
    assert len(epochs) >= 2, spans
    for older, newer in zip(epochs, epochs[1:]):
        assert spans[older][1]["time"] < spans[newer][0]["time"]
    # The new owner went on from a checkpoint host-a had reached, not from step 0.
    resumed_from = min(r["step"] for r in rows if r["epoch"] == epochs[-1]) - 1
    assert 0 < resumed_from <= max(r["step"] for r in rows if r["epoch"] == epochs[-2])
    assert resumed_from >= min(last_a, 100)
    workers = gand(env, home, "workers")
    states = {(w["host"], w["state"]) for w in workers}
    assert ("host-a", "lost") in states and not any(h == "host-a" and s != "lost"
                                                     for h, s in states), workers
    assert any(h == "host-b" and s in ("idle", "busy") for h, s in states)
    assert time.time() - killed_at < 420
