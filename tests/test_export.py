"""`gand export`: TensorBoard event files that TensorBoard's own reader loads with every
metric, evaluation and sample grid at its step, and JSON Lines of the same numbers.

One real job (a GAN on ring8, evaluated for mode coverage, trained by a real worker) is
exported; the files are read back, not just found.
"""
from __future__ import annotations

import io
import json
import math

import pytest
from PIL import Image

from support import Gand, InProcessCli, make_env

STEPS = 200


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    home = tmp_path_factory.mktemp("exporthome")
    g = InProcessCli(Gand(home, make_env(home, "filesystem", "sqlite")))
    job_id = g.submit("gan", "--data", "ring8", "--steps", str(STEPS), "--seed", "4",
                      "--sample-every", "50", "--eval-every", "100", "--eval-metric", "coverage",
                      "--best-by", "coverage", "--name", "ring export")
    worker = g.worker()
    assert worker.wait(timeout=300) == 0, g.worker_log()
    assert g.json("show", job_id)["status"] == "succeeded", g.worker_log()
    yield g, job_id
    g.stop_workers()


def _accumulator(folder):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
    acc.Reload()
    return acc


def test_tensorboard_reads_every_metric_evaluation_and_sample_grid(job, tmp_path):
    g, job_id = job
    store = g.store()
    summary = g.json("export", job_id[:8], "--tensorboard", str(tmp_path / "tb"))
    (run,) = summary["tensorboard"]
    assert run["path"] == str(tmp_path / "tb" / f"{job_id[:12]}-ring-export")
    acc = _accumulator(run["path"])
    tags = acc.Tags()

    metrics = store.metrics(job_id)
    keys = {m.key for m in metrics}
    assert {"d_loss", "g_loss", "img_per_s"} <= keys
    assert set(tags["scalars"]) >= {f"train/{k}" for k in keys}
    for key in keys:
        written = [(e.step, e.value) for e in acc.Scalars(f"train/{key}")]
        expected = [(m.step, m.value) for m in metrics if m.key == key]
        assert [s for s, _ in written] == [s for s, _ in expected], key
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(written, expected)), key

    evaluations = store.evaluations(job_id)
    assert {e.key for e in evaluations} >= {"modes"}
    for e in evaluations:
        points = {p.step: p.value for p in acc.Scalars(f"eval/{e.key}")}
        assert math.isclose(points[e.step], e.value, rel_tol=1e-6), e

    # One image per sample grid, at its step, the same picture as the file.
    grids = {a.step: g.home / a.path for a in store.artifacts(job_id) if a.kind == "samples"}
    assert sorted(grids) == [50, 100, 150, 200]
    images = acc.Images("samples")
    assert [i.step for i in images] == sorted(grids)
    for i in images:
        decoded = Image.open(io.BytesIO(i.encoded_image_string)).convert("RGB")
        with Image.open(grids[i.step]) as original:
            assert decoded.size == original.size
            assert decoded.tobytes() == original.convert("RGB").tobytes()
    assert run == {"job": job_id, "path": run["path"], "scalars": len(metrics) + len(evaluations),
                   "images": 4, "skipped_images": 0}

    # Exporting again replaces the event file instead of doubling every point.
    g.json("export", job_id, "--tensorboard", str(tmp_path / "tb"))
    assert len(list((tmp_path / "tb" / run["path"]).glob("events.out.tfevents.*"))) == 1
    assert len(_accumulator(run["path"]).Scalars("train/d_loss")) == STEPS


def test_jsonl_holds_the_metrics_and_evaluations(job, tmp_path):
    g, job_id = job
    out = tmp_path / "m" / "metrics.jsonl"
    text = g.ok("export", job_id, "--jsonl", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert f"{len(lines)} lines in {out}" in text
    metrics = [r for r in lines if r["kind"] == "metric"]
    cli_rows = g.json("metrics", job_id)
    assert [{k: r[k] for k in ("step", "key", "value", "time", "epoch")} for r in metrics] == cli_rows
    assert all(r["job"] == job_id for r in lines)
    evaluations = [r for r in lines if r["kind"] == "evaluation"]
    assert {(r["step"], r["key"]) for r in evaluations} == \
        {(e.step, e.key) for e in g.store().evaluations(job_id)}
    assert all(r["num_samples"] == 2500 and r["metric"] == "coverage" for r in evaluations)


@pytest.mark.parametrize("args,message", [
    ([], "nothing to export to"),
    (["--jsonl", "-", "--json"], "both write to stdout"),
])
def test_export_refuses_a_mistake_in_one_line(job, args, message):
    g, job_id = job
    code, out, err = g("export", job_id, *args)
    assert code == 2 and err.count("\n") == 1 and message in err, (out, err)


def test_export_of_an_unknown_job_writes_nothing(job, tmp_path):
    g, job_id = job
    code, _, err = g("export", job_id, "0123456789abcdef", "--tensorboard", str(tmp_path / "tb"))
    assert code == 1 and "no job '0123456789abcdef'" in err
    assert not (tmp_path / "tb").exists()
