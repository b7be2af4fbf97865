"""Fault injection with real worker processes, real brokers and a real database.

Each test breaks something the way it breaks in production — SIGKILL, SIGTERM, a duplicated
message, a truncated checkpoint, a full disk, a restarted or password/TLS-protected Redis, NaN
losses — and checks how the job ends. docs/reliability.md maps each fault to its test here.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from support import Exploit, Gand, cli, make_env, wait_for

from gand.engine import checkpoint as ckpt
from gand.errors import CheckpointError, UsageError
from gand.store.models import Job

# --- helpers ----------------------------------------------------------------------------------
# The CLI runs in this process (`cli`) and jobs are read straight from the store (`show`): a
# `gand` subprocess costs seconds of interpreter and torch start-up on a loaded 2-core machine.
# Workers are always real `gand worker` processes.

def submit(g, *args: str) -> str:
    code, out, err = cli(g, "submit", *args, "--json")
    assert code == 0, err
    return json.loads(out)["id"]


def show(g, job_id: str) -> dict:
    """What `gand show --json` prints, read in this process."""
    s = g.store()
    d = s.get_job(job_id).to_json()
    # Paths are stored relative to the artifacts root (GAND_HOME here), as `gand show` resolves.
    d["checkpoints"] = [{**c.to_json(), "path": str(g.home / c.path)} for c in s.checkpoints(job_id)]
    d["events"] = [e.to_json() for e in s.events(job_id)]
    return d


def wait_job(g, job_id: str, statuses: set[str], timeout: float = 150, step_at_least: int = 0) -> dict:
    def ready():
        j = show(g, job_id)
        return j if j["status"] in statuses and j["step"] >= step_at_least else None
    try:
        return wait_for(ready, timeout, f"job {job_id} in {statuses}")
    except AssertionError:
        logs = "\n".join(g.worker_log(i) for i in range(len(g.workers)))
        raise AssertionError(f"job {job_id} is {show(g, job_id)['status']}, wanted {statuses}\n{logs}")


def transitions(job: dict) -> list[tuple]:
    return [(e["from_status"], e["to_status"]) for e in job["events"]]


def reasons(job: dict) -> str:
    return "\n".join(e["reason"] or "" for e in job["events"])


def g_steps(g, job_id: str) -> list[int]:
    return [m.step for m in g.store().metrics(job_id, "g_loss")]


def python(g, code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**g.env, **(env or {})},
                          capture_output=True, text=True, timeout=60, cwd=g.home, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server on its own port, which a test may kill and start again."""

    def __init__(self, folder: Path, *extra: str, tls: bool = False):
        self.folder, self.extra, self.tls = folder, list(extra), tls
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        port = ["--port", "0", "--tls-port", str(self.port)] if self.tls else ["--port", str(self.port)]
        self.proc = subprocess.Popen(["redis-server", *port, "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.folder), *self.extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(listening, 15, f"redis-server on port {self.port}", 0.05)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_server(tmp_path):
    made: list[RedisServer] = []

    def make(*extra: str, tls: bool = False) -> RedisServer:
        if subprocess.run(["which", "redis-server"], capture_output=True, check=False).returncode:
            pytest.skip("redis-server is not installed")
        r = RedisServer(tmp_path, *extra, tls=tls)
        made.append(r)
        return r.start()

    yield make
    for r in made:
        r.kill()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Long-lived workers on one store, one per fault (started side by side to save start-ups).

    plain: no fault; qa: NaN losses at step 37; qb: NaN weights after step 80; qc: NaN losses at
    step 57 (for --on-diverge rollback); qd: a GAND_PLUGINS allowlist without the `gan` plugin.
    Each fault fires once per job, so the tests that share a fault worker may run in any order.
    """
    home = tmp_path_factory.mktemp("fleet")
    g = Gand(home, make_env(home, "filesystem", "sqlite"))
    assert cli(g, "list")[0] == 0  # creates and migrates the database before the workers race
    faults = {"plain": {}, "qa": {"GAND_FAULT_NAN_AT_STEP": "37"},
              "qb": {"GAND_FAULT_NAN_WEIGHTS_AT_STEP": "80"}, "qc": {"GAND_FAULT_NAN_AT_STEP": "57"},
              "qd": {"GAND_PLUGINS": "builtin-datasets,dcgan"}}
    g.fleet = {q: g.worker("--queues", q, env=env, burst=False) for q, env in faults.items()}
    yield g
    g.stop_workers()


def fleet_log(g, queue: str) -> str:
    return g.worker_log(g.workers.index(g.fleet[queue]))


# --- exactly one runner, automatic recovery ---------------------------------------------------

def test_sigkill_mid_job_is_recovered_automatically(gand):
    """SIGKILL the worker running a job: the other worker's reaper requeues it and runs it on."""
    total = 2000  # at batch 64 (not the ring8 recipe's 2048): 6 ms a step here
    job_id = submit(gand, "gan", "--data", "ring8", "--steps", str(total), "--checkpoint-every", "100",
                    "--sample-every", "0", "--batch-size", "64")
    workers = [gand.worker(burst=False), gand.worker(burst=False)]
    job = wait_for(lambda: (j := show(gand, job_id))["checkpoints"] and j["status"] == "running"
                   and j, 120, "a first checkpoint")
    holder = next(w for w in workers if f"gand-{w.pid}@" in job["worker"])
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    dead = job["worker"]

    job = wait_job(gand, job_id, {"succeeded", "failed"}, timeout=150)
    assert job["status"] == "succeeded" and job["step"] == total, job
    assert job["recoveries"] == 1
    moves = transitions(job)
    assert moves.count(("running", "recovering")) == 1 and moves.count(("recovering", "queued")) == 1
    recovery = next(e for e in job["events"] if e["to_status"] == "recovering")
    assert dead in recovery["reason"] and "lease" in recovery["reason"]
    assert recovery["worker"] != dead  # the survivor's reaper made the move
    # The second run continued from the checkpoint instead of starting again from step 1.
    steps = g_steps(gand, job_id)
    assert steps.count(1) == 1 and max(steps) == total and len(steps) < 2 * total
    # The survivor, idle now, stops promptly on SIGTERM.
    survivor = next(w for w in workers if w is not holder)
    t0 = time.monotonic()
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(timeout=60) == 0
    assert time.monotonic() - t0 < 20


def test_duplicate_message_runs_once_and_sqlite_takes_two_writers(gand_factory):
    """The same job id published twice and two workers on SQLite: one claim, one training run."""
    g = gand_factory(broker="redis")
    first = submit(g, "gan", "--data", "gauss1d", "--steps", "200", "--checkpoint-every", "100")
    second = submit(g, "gan", "--data", "gauss1d", "--steps", "200", "--checkpoint-every", "100")
    p = python(g, f"from gand import queue; queue.enqueue({first!r})")
    assert p.returncode == 0, p.stderr
    workers = [g.worker(), g.worker()]
    for w in workers:
        assert w.wait(timeout=150) == 0, g.worker_log()
    logs = g.worker_log(0) + g.worker_log(1)
    # The duplicate woke a worker that found nothing left to claim.
    assert "succeeded in" in logs and ": 'idle'" in logs, logs
    assert "database is locked" not in logs
    for job_id in (first, second):
        job = show(g, job_id)
        assert job["status"] == "succeeded" and job["step"] == 200, job
        assert transitions(job) == [(None, "queued"), ("queued", "running"), ("running", "succeeded")]
        assert sorted(g_steps(g, job_id)) == list(range(1, 201))  # one run: each step once


def test_two_reapers_recover_a_job_once(gand, monkeypatch):
    """Four reapers racing over dead jobs: one recovery each; the cap fails; cancelling ends."""
    from gand.jobs import reaper

    from gand import queue, settings
    from gand.store import JobStatus, Store

    for k, v in gand.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(queue, "_app", None)
    dead = submit(gand, "gan", "--data", "gauss1d", "--steps", "10", "--queue", "reaped")
    capped = submit(gand, "gan", "--data", "gauss1d", "--steps", "10", "--queue", "reaped",
                    "--max-recoveries", "1")
    dropping = submit(gand, "gan", "--data", "gauss1d", "--steps", "10", "--queue", "reaped")
    store = gand.store()
    past = datetime.now(UTC) - timedelta(seconds=1)
    for job_id in (dead, capped, dropping):
        store.transition(job_id, JobStatus.queued, JobStatus.running, worker="w-dead@host",
                         lease_expires_at=past, recoveries=1 if job_id == capped else 0)
    store.transition(dropping, JobStatus.running, JobStatus.cancelling, worker="w-dead@host",
                     lease_expires_at=past)
    before = queue.queue_length("reaped")

    results: list = []
    barrier = threading.Barrier(4)

    def one(i: int) -> None:
        s = Store(settings.load().database_url)
        barrier.wait()
        results.extend(reaper.reap(s, f"reaper-{i}"))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    job = show(gand, dead)
    assert job["status"] == "queued" and job["recoveries"] == 1
    assert transitions(job).count(("running", "recovering")) == 1
    assert transitions(job).count(("recovering", "queued")) == 1
    assert "w-dead@host stopped renewing its lease" in reasons(job)
    assert queue.queue_length("reaped") == before + 1  # the dead job's message, sent once
    assert [r.action for r in results if r.job == dead].count("requeued") == 1

    job = show(gand, capped)
    assert job["status"] == "failed" and "gave up after 1 recoveries (--max-recoveries 1)" in job["error"]
    job = show(gand, dropping)
    assert job["status"] == "cancelled" and transitions(job)[-1] == ("cancelling", "cancelled")

    # `gand reap` on demand through the real entry point: nothing is left to do now.
    assert gand.json("reap") == []


# --- graceful shutdown and cancellation -------------------------------------------------------

def test_sigterm_requeues_at_current_step_then_finishes(gand):
    # Wide layers and enough steps that SIGTERM lands mid-job even on a fast machine; batch 64
    # (not the ring8 recipe's 2048) keeps the steps the finisher trains after it cheap.
    total = 2000
    job_id = submit(gand, "gan", "--data", "ring8", "--steps", str(total), "--checkpoint-every", "0",
                    "--sample-every", "0", "--set", "hidden=256", "--batch-size", "64")
    worker = gand.worker(burst=False)
    wait_job(gand, job_id, {"running"}, step_at_least=20, timeout=120)
    # The worker that will finish the job starts now, so its start-up overlaps the shutdown;
    # the job is already claimed, so it can only get the job once it is handed back.
    finisher = gand.worker(burst=False)
    t0 = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, gand.worker_log()
    assert time.monotonic() - t0 < 30  # bounded: a checkpoint, not the rest of the job
    job = wait_job(gand, job_id, {"succeeded", "failed"}, timeout=150)
    assert job["status"] == "succeeded" and job["step"] == total, job
    assert job["recoveries"] == 0 and "failed" not in {e["to_status"] for e in job["events"]}
    handed_back = [e for e in job["events"] if (e["from_status"], e["to_status"]) == ("running", "queued")]
    assert len(handed_back) == 1 and "shutting down" in handed_back[0]["reason"], job["events"]
    stopped = int(handed_back[0]["reason"].rsplit(" ", 1)[1])  # "... requeued at step N"
    assert 20 <= stopped < total
    # Checkpointed where it stopped, and the finisher went on from there.
    assert [c["step"] for c in job["checkpoints"]] == [stopped, total]
    steps = g_steps(gand, job_id)
    assert steps.count(1) == 1 and steps.count(stopped + 1) == 1
    finisher.send_signal(signal.SIGTERM)
    assert finisher.wait(timeout=60) == 0


def test_cancelled_job_keeps_its_checkpoint_and_resumes(fleet):
    g = fleet
    job_id = submit(g, "gan", "--data", "gauss1d", "--steps", "200000", "--checkpoint-every", "0",
                    "--sample-every", "0", "--queue", "plain")
    wait_job(g, job_id, {"running"}, step_at_least=50, timeout=120)
    assert cli(g, "cancel", job_id)[0] == 0
    job = wait_job(g, job_id, {"cancelled"}, timeout=30)
    reached = job["checkpoints"][-1]["step"]
    assert reached == job["step"] >= 50
    code, out, err = cli(g, "resume", job_id, "--steps", str(reached + 100))
    assert code == 0 and f"continues from step {reached}" in out, err
    job = wait_job(g, job_id, {"succeeded", "failed"}, timeout=120)
    assert job["status"] == "succeeded" and job["step"] == reached + 100
    steps = g_steps(g, job_id)
    assert steps.count(1) == 1 and steps.count(reached + 1) == 1


# --- checkpoints ------------------------------------------------------------------------------

def test_corrupt_latest_checkpoint_is_skipped_and_retention_keeps_k(fleet):
    g = fleet
    job_id = submit(g, "gan", "--data", "gauss1d", "--steps", "300", "--checkpoint-every", "50",
                    "--keep-checkpoints", "3", "--sample-every", "0", "--queue", "plain")
    job = wait_job(g, job_id, {"succeeded", "failed"}, timeout=120)
    assert [c["step"] for c in job["checkpoints"]] == [200, 250, 300], job
    on_disk = sorted(p.name for p in (g.home / "runs" / job_id / "checkpoints").glob("*.pt"))
    assert on_disk == [ckpt.file_name(s, 1) for s in (200, 250, 300)]  # older files deleted too

    latest = Path(job["checkpoints"][-1]["path"])
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # truncated
    assert cli(g, "resume", job_id, "--steps", "350")[0] == 0
    job = wait_job(g, job_id, {"succeeded", "failed"}, timeout=120)
    assert job["status"] == "succeeded" and job["step"] == 350
    assert "skipped checkpoint at step 300" in reasons(job)
    steps = g_steps(g, job_id)
    assert steps.count(250) == 1 and steps.count(251) == 1  # one series: the latest attempt's
    every = [m.step for m in g.store().metrics(job_id, "g_loss", superseded=True)]
    assert every.count(251) == 2 and every.count(300) == 2  # continued from step 250


def test_retention_never_deletes_the_best(tmp_path):
    from gand import plugins
    from gand.jobs.service import JobService, JobWriter
    from gand.jobspec import build_config
    from gand.store import Store

    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    config = build_config(plugins.load(), variant="gan", data="ring8", steps=5).to_dict()
    job = store.create_job(variant="gan", loss="bce", data=["ring8"], config=config, total_steps=5)
    job, lease = store.claim(job.id, "w1", 60)
    rows = []
    for step in range(1, 6):
        f = tmp_path / f"{step}.pt"
        f.write_bytes(b"x")
        rows.append(store.add_checkpoint(job.id, step, str(f), 1, "0" * 64))
    store.mark_best(job.id, rows[1].id)
    JobWriter(JobService(store=store), job, lease).prune_checkpoints(2)
    assert [c.step for c in store.checkpoints(job.id)] == [2, 4, 5]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["2.pt", "4.pt", "5.pt"]


def test_disk_full_fails_the_job_and_keeps_earlier_checkpoints(fleet):
    g = fleet
    # The job id decides its run folder, so the job is created held back (cancelled) to learn
    # it, its folder is put on a 1 MiB tmpfs — a real full disk: two 450 kB checkpoints fit,
    # a third does not — and only then is it resumed.
    # ema=0 pack=1: the plain ring8 model (gan's recipe adds an EMA copy and a wider D).
    job_id = submit(g, "gan", "--data", "ring8", "--steps", "1000", "--checkpoint-every", "100",
                    "--sample-every", "0", "--keep-checkpoints", "0", "--queue", "hold",
                    "--set", "ema=0", "--set", "pack=1", "--batch-size", "256")
    assert cli(g, "cancel", job_id)[0] == 0
    run_dir = g.home / "runs" / job_id
    run_dir.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(run_dir)],
                      capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        g.store().transition(job_id, "cancelled", "queued", reason="test: on a full disk now")
        with g.store().session() as s:  # the database says where it runs, not the message
            s.get(Job, job_id).queue = "plain"
        p = python(g, f"from gand import queue; queue.enqueue({job_id!r}, 'plain')")
        assert p.returncode == 0, p.stderr
        job = wait_job(g, job_id, {"succeeded", "failed"}, timeout=120)
        assert job["status"] == "failed", job
        assert "could not write checkpoint" in job["error"] and "No space left" in job["error"], job
        assert [c["step"] for c in job["checkpoints"]] == [100, 200]
        for c in job["checkpoints"]:
            assert ckpt.sha256_of(Path(c["path"])) == c["sha256"]  # earlier ones intact
        assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # no torn temp file left
    finally:
        subprocess.run(["umount", "-l", str(run_dir)], capture_output=True, check=False)


# --- divergence and the plugin allowlist ------------------------------------------------------

def test_nan_loss_fails_with_diverged_at_step(fleet):
    job_id = submit(fleet, "gan", "--data", "gauss1d", "--steps", "200", "--queue", "qa")
    job = wait_job(fleet, job_id, {"succeeded", "failed"})
    assert job["status"] == "failed" and job["error"].startswith("diverged at step 37 ("), job


def test_nan_weights_fail_and_are_never_saved(fleet):
    job_id = submit(fleet, "gan", "--data", "gauss1d", "--steps", "200", "--queue", "qb",
                    "--checkpoint-every", "40")
    job = wait_job(fleet, job_id, {"succeeded", "failed"})
    assert job["status"] == "failed" and job["error"].startswith("diverged at step 80 (weight "), job
    assert [c["step"] for c in job["checkpoints"]] == [40]  # the poisoned weights were not saved


def test_on_diverge_rollback_halves_the_learning_rate(fleet):
    job_id = submit(fleet, "gan", "--data", "gauss1d", "--steps", "120", "--queue", "qc",
                    "--checkpoint-every", "20", "--on-diverge", "rollback", "--lr", "0.001")
    job = wait_job(fleet, job_id, {"succeeded", "failed"})
    assert job["status"] == "succeeded" and job["step"] == 120, job
    assert "diverged at step 57" in reasons(job) and "rollback 1 of 3: restored step 40" in reasons(job)
    state = torch.load(job["checkpoints"][-1]["path"], weights_only=True)
    lrs = {g["lr"] for o in state["models"]["optimizers"].values() for g in o["param_groups"]}
    assert lrs == {0.0005}  # halved once, and kept by the later checkpoints


def test_rollback_is_bounded_then_fails(fleet):
    """A learning rate of 1e30 diverges for real, however often it is halved: 3 rollbacks, then failed."""
    job_id = submit(fleet, "gan", "--data", "gauss1d", "--steps", "100", "--checkpoint-every", "10",
                    "--lr", "1e30", "--on-diverge", "rollback", "--queue", "plain")
    job = wait_job(fleet, job_id, {"succeeded", "failed"})
    assert job["status"] == "failed" and job["error"].startswith("diverged at step "), job
    assert job["error"].endswith("gave up after 3 rollbacks")
    assert [n for n in (1, 2, 3) if f"rollback {n} of 3" in reasons(job)] == [1, 2, 3]


def test_a_worker_whose_allowlist_lacks_the_variant_leaves_the_job_queued(fleet):
    """The qd worker loads only dcgan: a gan job waits for a worker that can run it."""
    job_id = submit(fleet, "gan", "--data", "gauss1d", "--steps", "20", "--queue", "qd")
    note = "plugin for variant 'gan' is not installed or not allowed there"
    def handed_back():
        j = show(fleet, job_id)
        return j if note in reasons(j) else None

    job = wait_for(handed_back, 60, "the qd worker's hand-back")
    assert job["status"] == "queued" and job["step"] == 0
    code, out, _ = cli(fleet, "show", job_id, "--json")
    assert f"no live worker can run it: {note}" in json.loads(out)["waiting_for"]


# --- security: no pickle anywhere -------------------------------------------------------------

def test_pickled_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "step_00000001.pt"
    torch.save({"format": ckpt.FORMAT, "step": 1, "models": Exploit(marker)}, bad)
    with pytest.raises(CheckpointError, match="cannot be read"):
        ckpt.load(bad)
    with pytest.raises(CheckpointError, match="cannot be read"):
        ckpt.load(bad, ckpt.sha256_of(bad))  # a matching hash does not make it trusted
    assert not marker.exists()


def test_pickled_message_is_refused_by_the_worker(fleet):
    from gand import settings
    from gand.queue import make_app

    g = fleet
    marker = g.home / "pwned"
    conf = make_app(settings.Settings(g.home, "filesystem://", "sqlite://", ())).conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "from support import Exploit\n"
            "from gand import queue\n"
            f"queue.app().send_task(queue.TASK, args=[Exploit({str(marker)!r})], serializer='pickle',"
            " queue='plain')\n")
    p = python(g, code)
    assert p.returncode == 0, p.stderr
    good = submit(g, "gan", "--data", "gauss1d", "--steps", "20", "--queue", "plain")
    assert wait_job(g, good, {"succeeded", "failed"})["status"] == "succeeded"  # carried on
    assert not marker.exists()
    assert "untrusted content" in fleet_log(g, "plain").lower()


def test_an_unreadable_message_file_is_set_aside_and_the_worker_runs_on(gand):
    """A message file that cannot be decoded (kombu's own writer could leave one empty for a
    moment) used to stop the worker with "Unrecoverable error", stranding the queued job."""
    job_id = submit(gand, "gan", "--data", "gauss1d", "--steps", "20")
    queue = gand.home / "broker" / "queue"
    (queue / "0_empty.gand.msg").write_bytes(b"")  # sorts before the real message
    (queue / "1_torn.gand.msg").write_bytes(b'{"body": "eyJ')
    w = gand.worker()
    assert w.wait(timeout=120) == 0, gand.worker_log()
    assert show(gand, job_id)["status"] == "succeeded"
    rejected = sorted(p.name for p in (gand.home / "broker" / "processed" / "rejected").iterdir())
    assert rejected == ["0_empty.gand.msg", "1_torn.gand.msg"]
    log = gand.worker_log()
    assert "skipped a message file the broker could not read, 0_empty.gand.msg" in log
    assert "Unrecoverable" not in log


def test_embedded_broker_messages_appear_whole_under_concurrent_readers(tmp_path):
    """Writers rename a finished file into the queue; readers never see a partial one, take
    each message once, and ignore files still being written."""
    from kombu import Connection

    from gand import settings
    from gand.queue import transport_options

    opts = transport_options(settings.Settings(tmp_path, "filesystem://", "sqlite://", ()))
    (tmp_path / "broker" / "queue" / ".in-progress.part").write_bytes(b"{")
    sent, got, errors = 300, [], []

    def read():
        with Connection("filesystem://", transport="gand.queue_files:Transport",
                        transport_options=opts) as conn:
            q = conn.SimpleQueue("race")
            deadline = time.monotonic() + 120
            while len(got) < sent and time.monotonic() < deadline:
                try:
                    m = q.get(timeout=0.05)
                except q.Empty:
                    continue
                except Exception as e:  # what would have stopped a worker
                    errors.append(e)
                    return
                got.append(m.payload["n"])
                m.ack()

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    with Connection("filesystem://", transport="gand.queue_files:Transport",
                    transport_options=opts) as conn:
        q = conn.SimpleQueue("race")
        for n in range(sent):
            q.put({"n": n, "pad": "x" * 4096})
    for t in readers:
        t.join(timeout=150)
    assert not errors
    assert sorted(got) == list(range(sent))
    assert (tmp_path / "broker" / "queue" / ".in-progress.part").exists()


def test_fleet_workers_stop_promptly_on_sigint_and_sigterm(fleet):
    for q in fleet.fleet:
        wait_for(lambda q=q: " ready." in fleet_log(fleet, q), 120, f"worker {q} to be ready")
    for q, w in fleet.fleet.items():
        w.send_signal(signal.SIGINT if q == "plain" else signal.SIGTERM)
    t0 = time.monotonic()
    for q, w in fleet.fleet.items():
        # Celery's warm shutdown exits 0 on SIGTERM and 1 on SIGINT (an interrupted worker).
        assert w.wait(timeout=60) == (1 if q == "plain" else 0), fleet_log(fleet, q)
        assert "Warm shutdown" in fleet_log(fleet, q)
    assert time.monotonic() - t0 < 20


# --- broker and store faults ------------------------------------------------------------------

def test_submit_with_broker_down_leaves_nothing(gand):
    """One line, a non-zero exit, and not a row written."""
    assert cli(gand, "list")[0] == 0
    before = gand.store().count_rows()
    gand.env["GAND_BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    code, out, err = cli(gand, "submit", "gan", "--data", "ring8")
    assert code != 0 and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the broker" in lines[0], err
    assert gand.store().count_rows() == before


def test_password_tls_redis_restarted_during_a_job(gand, redis_server, tmp_path):
    """A full job through Redis with a password over TLS; Redis is killed and restarted mid-job."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                           str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                           "-addext", "subjectAltName=DNS:localhost"], capture_output=True, check=False)
    if made.returncode:
        pytest.skip("openssl could not make a certificate")
    server = redis_server("--requirepass", "s3cret", "--tls-cert-file", str(cert), "--tls-key-file",
                          str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", tls=True)
    base = f"rediss://:s3cret@localhost:{server.port}/0"

    # Verified by default: a self-signed server certificate is refused without its CA.
    gand.env["GAND_BROKER_URL"] = base
    code, _, err = cli(gand, "submit", "gan", "--data", "gauss1d")
    assert code != 0 and "certificate verify failed" in err and "s3cret" not in err, err
    gand.env["GAND_BROKER_URL"] = base.replace("s3cret", "wrong") + f"?ssl_ca_certs={cert}"
    code, _, err = cli(gand, "submit", "gan", "--data", "gauss1d")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "s3cret" not in err, err

    gand.env["GAND_BROKER_URL"] = f"{base}?ssl_cert_reqs=required&ssl_ca_certs={cert}"
    assert "s3cret" not in cli(gand, "config")[1]
    total = 4000  # at batch 64 (not the recipe's 2048), long enough to outlast the outage
    job_id = submit(gand, "gan", "--data", "ring8", "--steps", str(total), "--checkpoint-every", "500",
                    "--sample-every", "0", "--batch-size", "64")
    worker = gand.worker()
    wait_job(gand, job_id, {"running"}, step_at_least=50, timeout=120)
    server.kill()
    time.sleep(2)  # an outage, not a synchronisation: the worker must ride it out
    server.start()
    # Sent through the restarted server (which kept nothing) while the first job still runs.
    again = submit(gand, "gan", "--data", "gauss1d", "--steps", "20")
    job = wait_job(gand, job_id, {"succeeded", "failed"}, timeout=150)
    assert job["status"] == "succeeded" and job["step"] == total, job
    # The consumer reconnected, ran the second job, and the burst worker then ended cleanly.
    assert wait_job(gand, again, {"succeeded", "failed"}, timeout=120)["status"] == "succeeded"
    assert worker.wait(timeout=90) == 0, gand.worker_log()


def test_burst_worker_whose_broker_dies_for_good_stops_in_bounded_time(gand, redis_server):
    """Redis killed mid-job and never back: the job still finishes (its heartbeat is the
    database's), then the burst worker gives up after GAND_BROKER_TIMEOUT with one line,
    instead of retrying forever (Celery's own event heartbeat used to hang it here)."""
    server = redis_server()
    gand.env.update(GAND_BROKER_URL=f"redis://127.0.0.1:{server.port}/0", GAND_BROKER_TIMEOUT="5")
    job_id = submit(gand, "gan", "--data", "gauss1d", "--steps", "3000", "--checkpoint-every",
                    "0", "--sample-every", "0")
    worker = subprocess.Popen([sys.executable, "-m", "gand", "worker", "--burst"], env=gand.env,
                              cwd=gand.home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        wait_job(gand, job_id, {"running"}, step_at_least=10, timeout=120)
        server.kill()
        job = wait_job(gand, job_id, {"succeeded", "failed"}, timeout=120)
        assert job["status"] == "succeeded", job
        finished = time.monotonic()
        _, err = worker.communicate(timeout=90)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 1
    assert time.monotonic() - finished < 60
    last = err.strip().splitlines()[-1]
    assert last.startswith("gand: error: cannot reach the broker at redis://127.0.0.1:"), last
    assert "GAND_BROKER_TIMEOUT" in last and "the burst worker stopped" in last


def test_tls_options_from_the_url():
    import ssl

    from gand.queue import ssl_options

    assert ssl_options("redis://h:6379/0") is None
    assert ssl_options("rediss://:pw@h:6380/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert ssl_options("rediss://h/0?ssl_cert_reqs=none") == {"ssl_cert_reqs": ssl.CERT_NONE}
    assert ssl_options("rediss://h/0?ssl_cert_reqs=CERT_OPTIONAL") == {"ssl_cert_reqs": ssl.CERT_OPTIONAL}
    with pytest.raises(UsageError, match="ssl_cert_reqs='maybe' is invalid"):
        ssl_options("rediss://h/0?ssl_cert_reqs=maybe")
    with pytest.raises(UsageError, match="ssl_ca_certs='/no/ca.pem' is not a readable file"):
        ssl_options("rediss://h/0?ssl_ca_certs=/no/ca.pem")
