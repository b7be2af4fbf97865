"""Checkpoints and sample grids written off the step (gand/engine/background.py), and the figures
a job records about itself: checkpoint pauses and write times, peak memory, its first step.

The loop copies its state to host memory and trains on while a background thread writes; these
tests prove the copy is the state of its step, that a write is never doubled nor lost, that its
errors reach the job, and — with real workers — that a SIGKILL in the middle of a background
write leaves the previous checkpoint verified, and the job resumes from it and completes.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from support import MNIST, cli, wait_for

from gand.engine import checkpoint as ckpt
from gand.engine import faults
from gand.engine.snapshot import Snapshot, StaleSnapshot
from gand.engine.trainer import Diverged, Hooks, Run, train
from gand.errors import CheckpointError
from gand.jobspec import build_config


def ring8(registry, steps: int, every: int):
    # No lr_decay (gan's ring8 recipe has one): its schedule depends on the total, and a run
    # that ends at step 10 must train exactly as the first 10 steps of a longer one.
    cfg = build_config(registry, variant="gan", data="ring8", steps=steps, seed=3, device="cpu",
                       checkpoint_every=every, sample_every=0, batch_size=256,
                       sets=["lr_decay=0"])
    return Run.build(cfg, registry)


def flat(state) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's models (nets, optimizers, extras) by its path."""
    out = {}

    def walk(x, path):
        if isinstance(x, torch.Tensor):
            out[path] = x
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{path}/{i}")
    walk(state, "")
    return out


def test_to_host_is_a_detached_copy_keeping_types():
    net = torch.nn.BatchNorm1d(3)
    sd = net.state_dict()
    state = {"sd": sd, "pool": [torch.ones(2)], "n": 3, "t": (torch.zeros(1), "x")}
    host = ckpt.to_host(state)
    with torch.no_grad():
        net.weight.add_(1)
    state["pool"][0].add_(1)
    state["pool"].append(torch.ones(1))
    assert torch.equal(host["sd"]["weight"], torch.ones(3))  # not the live parameter
    assert torch.equal(host["pool"][0], torch.ones(2)) and len(host["pool"]) == 1
    assert host["n"] == 3 and host["t"][1] == "x"
    # A module's state_dict keeps its class and _metadata, which load_state_dict reads.
    assert type(host["sd"]) is OrderedDict and host["sd"]._metadata == sd._metadata
    assert not host["sd"]["weight"].requires_grad
    cl = torch.zeros(1, 3, 4, 4).to(memory_format=torch.channels_last)
    assert ckpt.to_host(cl).is_contiguous(memory_format=torch.channels_last)


def test_to_host_into_an_earlier_copy_refills_what_matches():
    state = {"w": torch.ones(3), "pool": [torch.zeros(2)], "grown": torch.ones(2, 2)}
    first = ckpt.to_host(state)
    state["w"].add_(1)
    state["pool"].append(torch.ones(4))  # an image pool filling up
    state["grown"] = torch.ones(3, 2)  # a shape that changed
    second = ckpt.to_host(state, into=first)
    assert second["w"] is first["w"] and torch.equal(second["w"], torch.full((3,), 2.0))
    assert second["pool"][0] is first["pool"][0] and torch.equal(second["pool"][1], torch.ones(4))
    assert second["grown"] is not first["grown"] and second["grown"].shape == (3, 2)
    assert second["pool"] is not first["pool"] and second is not first  # containers are new


def test_each_checkpoint_refills_the_written_one_and_holds_its_own_step(registry, tmp_path):
    """From the second checkpoint on, the loop copies into the host buffers of the previous,
    written one (no allocation in the pause), and each write still sees the state of its step."""
    buffers, values = [], []

    def write(step: int, state: dict) -> None:
        tensors = flat(state)
        buffers.append({k: v.data_ptr() for k, v in tensors.items()})
        values.append({k: v.clone() for k, v in tensors.items()})

    train(ring8(registry, 30, 10), tmp_path, Hooks(checkpoint=write))
    assert len(buffers) == 3 and buffers[0] == buffers[1] == buffers[2]
    shorter = []
    train(ring8(registry, 20, 10), tmp_path / "shorter",
          Hooks(checkpoint=lambda step, state: shorter.append(
              {k: v.clone() for k, v in flat(state).items()})))
    for k, v in shorter[1].items():  # step 20, alone and in the longer run
        assert torch.equal(v, values[1][k]), k
    assert any(not torch.equal(values[0][k], values[1][k]) for k in values[0] if "/nets/" in k)


def test_background_checkpoints_hold_the_state_of_their_step_one_at_a_time(registry, tmp_path):
    """Each write is slower than the steps between checkpoints: the loop trains on meanwhile,
    yet every checkpoint is exactly the state of its step, written one at a time and in order,
    and the last one is written before train() returns."""
    seen: list[tuple[int, dict, str]] = []
    flying, most = [0], [0]
    lock = threading.Lock()

    def slow_write(step: int, state: dict) -> None:
        with lock:
            flying[0] += 1
            most[0] = max(most[0], flying[0])
        time.sleep(0.3)
        seen.append((step, state, threading.current_thread().name))
        with lock:
            flying[0] -= 1

    rows: list[tuple[int, str, float]] = []
    batches: list[set[int]] = []

    def report(batch, step):
        rows.extend(batch)
        batches.append({s for s, _, _ in batch})
    run = ring8(registry, 30, 10)
    out = train(run, tmp_path, Hooks(checkpoint=slow_write, report=report))
    assert out.reason == "completed" and [s for s, _, _ in seen] == [10, 20, 30]
    assert most[0] == 1  # never two in flight
    assert all(name != threading.current_thread().name for _, _, name in seen)
    # A run that ends at step 10 checkpoints exactly what the background copy of step 10 holds
    # (its final checkpoint is taken before anything else happens at its last step).
    alone = []
    train(ring8(registry, 10, 10), tmp_path / "alone",
          Hooks(checkpoint=lambda step, state: alone.append(state)))
    want, got = flat(alone[0]), flat(seen[0][1])
    assert want.keys() == got.keys() and any("/models/nets/" in k for k in want)
    for k in want:
        assert torch.equal(want[k], got[k]), k
    assert seen[0][1]["step"] == 10
    # Each checkpoint's pause and write time are reported with the metrics.
    for key in ("ckpt_pause_ms", "ckpt_write_ms"):
        assert sorted(s for s, k, _ in rows if k == key) == [10, 20, 30], key
    assert all(v >= 250 for s, k, v in rows if k == "ckpt_write_ms")  # the write's own time
    assert batches[0] == {1}  # the first step is reported at once, alone


@pytest.mark.parametrize("copier", ["writer thread", "optimizer step"])
def test_a_snapshot_copies_the_optimizers_tensors_after_the_pause_as_they_were(registry, copier):
    """The optimizers' tensors (most of a checkpoint) are copied after the loop goes on, by the
    writer thread or, if it has not begun, by the first optimizer step, which waits for it;
    either way the copy is the state of the checkpoint's step, bit for bit."""
    run = ring8(registry, 100, 0)
    for s in range(1, 4):
        run.train_step(s)  # the optimizers' moments exist now
    want = flat(ckpt.to_host(run.state(3)))
    calls = []
    for opt in run.models.optimizers.values():  # someone else's hooks run beside gand's
        opt.register_step_pre_hook(lambda opt, args, kwargs: calls.append(opt))
    snap = Snapshot(run.state(3), list(run.models.optimizers.values()))
    for opt in run.models.optimizers.values():
        opt.register_step_pre_hook(lambda opt, args, kwargs: calls.append(opt))
    everything = sum(t.numel() * t.element_size() for t in want.values())
    assert snap.deferred_bytes > 0.6 * everything
    result = {}
    if copier == "writer thread":
        def write():
            result["state"] = snap.complete()
            snap.verdict()
            result["kept"] = True
        writer = threading.Thread(target=write)
        writer.start()
        wait_for(lambda: snap._copied, 30, "the writer's copy")
    run.train_step(4)  # its first optimizer step releases the snapshot
    if copier == "writer thread":
        writer.join(30)
        assert result["kept"]
    else:
        assert snap._copied  # made by the loop, before its optimizer changed anything
        result["state"] = snap.complete()
        snap.verdict()
    got = flat(result["state"])
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    live = flat(run.state(4))
    assert any(not torch.equal(live[k], want[k]) for k in want if "/optimizers/" in k)
    snap.release()  # as the loop does before it waits for the write: the hooks come off
    run.train_step(5)
    assert len(calls) == 4 * len(run.models.optimizers)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_a_snapshot_copies_on_a_side_stream_that_the_optimizer_step_waits_for(registry):
    """On a GPU the optimizers' tensors are copied on a side stream; the host never waits for
    it in the loop, the first optimizer step's stream does, and the copy is of its step."""
    cfg = build_config(registry, variant="dcgan", data=f"mnist:{MNIST}", steps=100, seed=3,
                       device="cuda", checkpoint_every=0, sample_every=0, batch_size=64)
    run = Run.build(cfg, registry)
    for s in range(1, 4):
        run.train_step(s)
    want = flat(ckpt.to_host(run.state(3)))
    snap = Snapshot(run.state(3), list(run.models.optimizers.values()))
    assert snap.deferred_bytes > 0.6 * sum(t.numel() * t.element_size() for t in want.values())
    for s in range(4, 8):  # queued at once behind the copy
        run.train_step(s)
    got = flat(snap.complete())
    snap.verdict()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert all(t.is_pinned() for k, t in got.items() if "/nets/" in k)


def test_an_optimizer_tensor_changed_outside_its_step_makes_the_snapshot_stale(registry):
    run = ring8(registry, 100, 0)
    run.train_step(1)
    snap = Snapshot(run.state(1), list(run.models.optimizers.values()))
    with torch.no_grad():
        next(run.models.nets["G"].parameters()).add_(1.0)  # a plugin editing weights by hand
    run.train_step(2)
    snap.complete()  # the copy itself is made
    with pytest.raises(StaleSnapshot, match="changed outside its step"):
        snap.verdict()  # but it is not to be kept


def test_a_stale_checkpoint_is_skipped_and_later_ones_are_copied_whole(registry, tmp_path):
    """The loop never writes a checkpoint that a change outside an optimizer step may have
    torn: it says so, and copies everything during the pause from then on."""
    run = ring8(registry, 30, 10)
    notes = []

    def tick(step):
        if step == 10:  # after the checkpoint of step 10 was taken, before step 11
            with torch.no_grad():
                next(run.models.nets["D"].parameters()).mul_(0.5)
        return None

    def save(step, state):  # as the worker does
        ckpt.save(tmp_path / "checkpoints" / ckpt.file_name(step), state)

    train(run, tmp_path, Hooks(checkpoint=save, tick=tick, note=notes.append))
    # Written while the loop trained on, but never put in place.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == \
        [ckpt.file_name(20), ckpt.file_name(30)]
    assert len(notes) == 1 and notes[0].startswith("checkpoint at step 10 not written: ")
    assert run.defer_copy is False


def test_sample_grids_are_drawn_in_the_background_from_the_samples_of_their_step(registry,
                                                                              tmp_path):
    """The loop draws the samples and trains on; the plot, its PNG and its row come from
    another thread, one at a time, and show the samples of their own step: the grid of step 10
    of a 30-step run, whose recording is slower than 10 steps, is the file a 10-step run ends
    with, byte for byte. The last grid is recorded before train() returns."""
    recorded: list[tuple[int, str]] = []

    def slow_artifact(kind: str, path: Path, step: int) -> None:
        time.sleep(0.3)
        recorded.append((step, threading.current_thread().name))

    rows: list[tuple[int, str, float]] = []
    cfg = build_config(registry, variant="gan", data="ring8", steps=30, seed=3, device="cpu",
                       checkpoint_every=0, sample_every=10, batch_size=256, sets=["lr_decay=0"])
    out = train(Run.build(cfg, registry), tmp_path / "long",
                Hooks(artifact=slow_artifact, report=lambda batch, step: rows.extend(batch)))
    assert out.reason == "completed" and [s for s, _ in recorded] == [10, 20, 30]
    assert all(name == "gand-sample-writer" for _, name in recorded)
    for key in ("samples_pause_ms", "samples_write_ms"):
        assert sorted(s for s, k, _ in rows if k == key) == [10, 20, 30], key
    short = dataclasses.replace(cfg, steps=10)
    train(Run.build(short, registry), tmp_path / "short", Hooks())
    grid = "samples/step_00000010.png"
    assert (tmp_path / "long" / grid).read_bytes() == (tmp_path / "short" / grid).read_bytes()
    assert (tmp_path / "long" / "samples/step_00000020.png").read_bytes() != \
        (tmp_path / "short" / grid).read_bytes()


def test_a_failed_sample_grid_fails_the_training(registry, tmp_path):
    def full_disk(kind: str, path: Path, step: int) -> None:
        raise CheckpointError(f"could not record {kind} at step {step}: No space left on device")

    cfg = build_config(registry, variant="gan", data="ring8", steps=200, seed=3, device="cpu",
                       checkpoint_every=0, sample_every=10, batch_size=256)
    with pytest.raises(CheckpointError, match="samples at step 10: No space left"):
        train(Run.build(cfg, registry), tmp_path, Hooks(artifact=full_disk))


def test_a_failed_background_write_fails_the_training(registry, tmp_path):
    def full_disk(step: int, state: dict) -> None:
        raise CheckpointError(f"could not write checkpoint step {step}: No space left on device")

    with pytest.raises(CheckpointError, match="No space left"):
        train(ring8(registry, 200, 10), tmp_path, Hooks(checkpoint=full_disk))


def test_poisoned_weights_are_checked_on_the_copy_and_never_written(registry, tmp_path,
                                                                     monkeypatch):
    """The finite check runs in the background writer now: still no NaN checkpoint, and the
    job still fails naming the checkpoint's step and the weight."""
    monkeypatch.setenv("GAND_FAULT_NAN_WEIGHTS_AT_STEP", "20")  # right after step 20's losses
    written: list[int] = []
    with faults.for_job(f"nan-copy-{tmp_path.name}"), \
            pytest.raises(Diverged, match=r"diverged at step 20 \(weight "):
        train(ring8(registry, 100, 10), tmp_path, Hooks(checkpoint=lambda s, st: written.append(s)))
    assert written == [10]


# --- with real workers ---------------------------------------------------------------------------

def submit(g, *args: str) -> str:
    code, out, err = cli(g, "submit", *args, "--json")
    assert code == 0, err
    return json.loads(out)["id"]


def test_a_jobs_checkpoints_verify_and_its_figures_are_recorded(gand):
    job_id = submit(gand, "gan", "--data", "ring8", "--steps", "300", "--checkpoint-every", "50",
                    "--sample-every", "0", "--keep-checkpoints", "0")
    assert gand.worker().wait(timeout=180) == 0, gand.worker_log()
    s = gand.store()
    job = s.get_job(job_id)
    assert job.status.value == "succeeded", gand.worker_log()
    cps = s.checkpoints(job_id)
    assert [c.step for c in cps] == [50, 100, 150, 200, 250, 300]
    for c in cps:  # each written in the background, each verifies as resume checks it
        assert ckpt.load(gand.home / c.path, c.sha256)["step"] == c.step
    rows = s.metrics(job_id)
    for key in ("ckpt_pause_ms", "ckpt_write_ms"):
        assert sorted(m.step for m in rows if m.key == key) == [50, 100, 150, 200, 250, 300]
    rss = [m.value for m in rows if m.key == "peak_rss_mb"]
    assert rss and all(50 < v < 24 * 1024 for v in rss), rss
    # The first step is in the store at once, so "started training" has a time.
    assert min(m.step for m in rows if m.key == "g_loss") == 1
    code, out, _ = cli(gand, "show", job_id, "--json")
    assert code == 0 and {"peak_rss_mb", "ckpt_pause_ms"} <= set(json.loads(out)["metrics"])


def test_sigkill_in_the_middle_of_a_background_write_resumes_from_the_previous(gand):
    """The worker dies half-way through writing step 200's file (in the background writer):
    step 100's checkpoint still verifies, and the job is recovered from it and completes."""
    job_id = submit(gand, "gan", "--data", "ring8", "--steps", "400", "--checkpoint-every", "100",
                    "--sample-every", "0")
    fault = {"GAND_FAULT_KILL_IN_CHECKPOINT_AT_STEP": "200"}
    workers = [gand.worker(burst=False, env=fault), gand.worker(burst=False, env=fault)]
    dead = wait_for(lambda: next((w for w in workers if w.poll() is not None), None), 150,
                    "a worker killed by its checkpoint write")
    assert dead.returncode == -signal.SIGKILL, gand.all_worker_logs()
    s = gand.store()
    folder = gand.home / "runs" / job_id / "checkpoints"
    torn = list(folder.glob(".step_00000200-*.tmp"))
    assert len(torn) == 1, list(folder.iterdir())
    rows = s.checkpoints(job_id)
    assert [c.step for c in rows] == [100]  # the torn write was never recorded
    whole = (folder / Path(rows[0].path).name).stat().st_size
    assert 0 < torn[0].stat().st_size < whole  # half a checkpoint, never renamed into place
    assert ckpt.load(gand.home / rows[0].path, rows[0].sha256)["step"] == 100

    def finished():
        j = s.get_job(job_id)
        return j if j.status.value in ("succeeded", "failed") else None
    job = wait_for(finished, 150, "the recovered job to finish")
    assert job.status.value == "succeeded" and job.step == 400, gand.all_worker_logs()
    assert job.recoveries == 1
    # The second attempt began at step 101: it resumed from the checkpoint of step 100.
    second = [m.step for m in s.metrics(job_id, "g_loss", superseded=True) if m.epoch == job.epoch]
    assert min(second) == 101 and max(second) == 400
    assert [c.step for c in s.checkpoints(job_id)] == [100, 200, 300, 400]
    for c in s.checkpoints(job_id):
        assert ckpt.load(gand.home / c.path, c.sha256)["step"] == c.step
    survivor = next(w for w in workers if w is not dead)
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(timeout=60) == 0
