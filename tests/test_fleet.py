"""The fleet on one machine: GPU slots (simulated with GAND_FAKE_GPUS), the worker registry,
priorities chosen by the database, and jobs that go where they can run.

The multi-host test, with network namespaces, is tests/test_multihost.py.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from support import cli, wait_for

FAKE_GPUS = "GPU-0a0a0a0a:Fake A100:40960,GPU-1b1b1b1b:Fake L4:24576"


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def registered(g, n: int, timeout: float = 180) -> list[dict]:
    """Waits until `n` worker processes are registered and not stopped; returns them."""
    def ready():
        rows = [w for w in json.loads(cli(g, "workers", "--json")[1])
                if w["state"] in ("idle", "busy")]
        return rows if len(rows) >= n else None
    return wait_for(ready, timeout, f"{n} registered workers", interval=0.5)


def job(g, job_id: str) -> dict:
    return json.loads(cli(g, "show", job_id, "--json")[1])


def submit(g, *args: str) -> str:
    code, out, err = cli(g, "submit", *args, "--json")
    assert code == 0, err
    return json.loads(out)["id"]


def test_one_child_per_gpu_slot_restarted_when_killed_and_drained_on_sigterm(gand):
    g = gand
    g.env["GAND_FAKE_GPUS"] = FAKE_GPUS
    supervisor = g.worker("--gpus", "all", "--jobs-per-gpu", "2", burst=False)
    rows = registered(g, 4)
    # Each child sees exactly its GPU (by UUID), two per GPU, each capped to half its memory.
    envs = {w["pid"]: environ(w["pid"]) for w in rows}
    assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in envs.values()) == [
        "GPU-0a0a0a0a", "GPU-0a0a0a0a", "GPU-1b1b1b1b", "GPU-1b1b1b1b"]
    assert {e["GAND_GPU_MEMORY_FRACTION"] for e in envs.values()} == {"0.5"}
    assert sorted(w["slot"] for w in rows) == ["gpu0/0", "gpu0/1", "gpu1/0", "gpu1/1"]
    for w in rows:
        (gpu,) = w["gpus"]
        assert gpu["uuid"] == envs[w["pid"]]["CUDA_VISIBLE_DEVICES"] and gpu["share"] == 0.5
    # The children share no broker file they could race to create at start (kombu's
    # filesystem transport truncates one before it locks it): the supervisor declared the
    # queue before starting them, and no child has a remote-control (pidbox) queue.
    control = g.home / "broker" / "control"
    assert (control / "gand.exchange").exists()
    assert not (control / "celery.pidbox.exchange").exists()
    # The supervisor itself never loaded torch (so it never touched CUDA).
    maps = Path(f"/proc/{supervisor.pid}/maps").read_text()
    assert "libtorch" not in maps and "libc10" not in maps

    # Two long jobs; SIGKILL the child running one: it is replaced, its job recovered.
    long = ["gan", "--data", "ring8", "--steps", "100000", "--checkpoint-every", "50",
            "--sample-every", "0"]
    first, second = submit(g, *long), submit(g, *long)
    wait_for(lambda: job(g, first)["step"] >= 60 and job(g, second)["step"] >= 1, 180,
             "both jobs training")
    victim = int(job(g, first)["worker"].split("@")[0].removeprefix("gand-"))
    slot = next(w["slot"] for w in rows if w["pid"] == victim)
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for(lambda: next((w for w in registered(g, 4) if w["slot"] == slot
                                      and w["pid"] != victim), None), 120, "a new child")
    assert environ(replaced["pid"])["CUDA_VISIBLE_DEVICES"] == envs[victim]["CUDA_VISIBLE_DEVICES"]
    recovered = wait_for(lambda: (j := job(g, first))["recoveries"] == 1 and
                         j["status"] == "running" and j, 120, "the job recovered")
    assert str(victim) not in recovered["worker"]

    # SIGTERM drains: every child checkpoints and requeues its job, then all exit.
    wait_for(lambda: job(g, second)["status"] == "running", 60, "the second job running")
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=120) == 0, g.worker_log()
    for job_id in (first, second):
        j = job(g, job_id)
        assert j["status"] == "queued" and "shutting down" in j["events"][-1]["reason"], j

    def states() -> dict[int, str]:
        return {w["pid"]: w["state"] for w in json.loads(cli(g, "workers", "--json")[1])}

    # SIGKILLed, it never said goodbye: it shows as lost once its last heartbeat is
    # LOST_AFTER_LEASES leases old, which the drain above may beat on a quick machine.
    final = wait_for(lambda: (s := states()).get(victim) == "lost" and s, 60,
                     "the killed child shown as lost")
    final.pop(victim)
    assert set(final.values()) == {"stopped"} and len(final) == 4


@pytest.mark.parametrize("broker", ["filesystem", "redis"])
def test_the_highest_priority_starts_first_then_submit_order(gand_factory, broker):
    g = gand_factory(broker=broker)
    ids = [submit(g, "gan", "--data", "ring8", "--steps", "20", "--sample-every", "0",
                  "--priority", "1") for _ in range(3)]
    urgent = submit(g, "gan", "--data", "ring8", "--steps", "20", "--sample-every", "0",
                    "--priority", "9")
    listed = json.loads(cli(g, "list", "--json")[1])
    assert {j["id"]: j["queue_position"] for j in listed} == {
        urgent: 1, ids[0]: 2, ids[1]: 3, ids[2]: 4}
    assert g.worker().wait(timeout=300) == 0, g.worker_log()
    started = sorted((job(g, i)["started_at"], i) for i in ids + [urgent])
    assert [i for _, i in started] == [urgent] + ids


def test_a_job_runs_on_the_worker_with_its_plugin_and_waits_for_a_gpu(gand):
    g = gand
    # Worker A loads only dcgan's plugin: it hands the gan job back and records why.
    a = g.worker(burst=False, env={"GAND_PLUGINS": "builtin-datasets,builtin-losses,dcgan"})
    registered(g, 1)
    job_id = submit(g, "gan", "--data", "ring8", "--steps", "30", "--sample-every", "0")
    note = (f"handed back by gand-{a.pid}@")
    why = "plugin for variant 'gan' is not installed or not allowed there"
    def handed_back():
        j = job(g, job_id)
        return j if any(e["reason"].startswith(note) and why in e["reason"]
                        for e in j["events"]) else None

    first = wait_for(handed_back, 60, "worker A's hand-back")
    assert first["status"] == "queued" and why in first["waiting_for"]
    # Worker B has every plugin: it finds the job (no new message was sent) and runs it.
    b = g.worker(burst=False)
    done = wait_for(lambda: (j := job(g, job_id))["status"] == "succeeded" and j, 180,
                    "the job on worker B")
    assert f"gand-{b.pid}@" in next(e["worker"] for e in done["events"]
                                   if e["to_status"] == "running")
    # A GPU job: no live worker has a GPU, so it stays queued and show says so.
    gpu_job = submit(g, "gan", "--data", "ring8", "--steps", "10", "--gpus", "1")
    shown = job(g, gpu_job)
    assert shown["status"] == "queued"
    assert shown["waiting_for"] == (
        f"no live worker can run it: plugin for variant 'gan' is not installed or not allowed "
        f"there (gand-{a.pid}@{socket.gethostname()}); the job needs a GPU and it has none "
        f"(gand-{b.pid}@{socket.gethostname()})")
    assert "waiting: no live worker can run it" in cli(g, "show", gpu_job)[1]


def test_gand_workers_lists_the_fleet_and_marks_a_silent_worker_lost(gand):
    g = gand
    g.env["GAND_LEASE_SECONDS"] = "2"
    w = g.worker("--queues", "gand,extra", burst=False)
    (row,) = registered(g, 1)
    assert {"host", "pid", "queues", "gpus", "job", "last_seen", "state"} <= set(row)
    assert row["pid"] == w.pid and row["queues"] == ["gand", "extra"] and row["gpus"] == []
    assert "gan" in row["variants"] and row["state"] == "idle"
    os.killpg(w.pid, signal.SIGKILL)  # the machine is gone: no "stopped" record
    w.wait()
    lost = wait_for(lambda: (r := json.loads(cli(g, "workers", "--json")[1])[0])["state"]
                    == "lost" and r, 60, "the worker to show as lost")
    assert lost["pid"] == w.pid
    text = cli(g, "workers")[1]
    assert "lost" in text and str(w.pid) in text


def test_paths_are_stored_relative_to_the_artifacts_root_so_another_host_resumes(gand, tmp_path):
    """Two 'hosts' mount the shared artifacts at different paths (here: two symlinks)."""
    g = gand
    shared = tmp_path / "nfs"
    shared.mkdir()
    (tmp_path / "host-a").symlink_to(shared)
    (tmp_path / "host-b").symlink_to(shared)
    g.env["GAND_ARTIFACTS"] = str(tmp_path / "host-a")
    job_id = submit(g, "gan", "--data", "ring8", "--steps", "100000", "--checkpoint-every", "50",
                    "--sample-every", "50")
    a = g.worker(burst=False)
    wait_for(lambda: job(g, job_id)["step"] >= 120, 120, "two checkpoints on host A")
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    store = g.store()
    stored = [c.path for c in store.checkpoints(job_id)]
    assert stored and all(p.startswith(f"runs/{job_id}/checkpoints/") for p in stored), stored
    assert all(not x.path.startswith("/") for x in store.artifacts(job_id))
    # Host B sees the same files under its own path, takes the job over and goes on from them.
    g.env["GAND_ARTIFACTS"] = str(tmp_path / "host-b")
    b = g.worker(burst=False)
    resumed = wait_for(lambda: (j := job(g, job_id))["recoveries"] == 1 and j["step"] > 150
                       and f"gand-{b.pid}@" in (j["worker"] or "") and j, 120, "host B")
    paths = [c["path"] for c in resumed["checkpoints"]]
    assert all(p.startswith(str(tmp_path / "host-b")) for p in paths), paths  # as B sees them
    skipped = [e for e in resumed["events"] if "skipped checkpoint" in (e["reason"] or "")]
    assert skipped == []  # B read A's checkpoint through its own mount point
    steps = [m.step for m in store.metrics(job_id, "g_loss", superseded=True)]
    assert steps.count(1) == 1  # B continued from A's checkpoint, not from step 0


def test_a_host_that_cannot_see_the_artifacts_root_says_so(gand, tmp_path):
    gand.env["GAND_ARTIFACTS"] = str(tmp_path / "not-mounted")
    p = gand.run("worker", "--burst", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        f"gand: error: artifacts root {tmp_path / 'not-mounted'} does not exist on this host; "
        f"mount the shared storage there or set GAND_ARTIFACTS to where it is mounted"]
