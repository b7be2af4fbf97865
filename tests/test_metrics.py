"""Metrics in process: FID/KID maths, coverage, class coverage, diversity, extractors, plots.

The MNIST classifier is trained once per test session (two epochs, in process) and cached under
pytest's base temp folder, where tests/test_evaluation_cli.py finds it too.
"""
from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch

from support import MNIST, mnist_tensors
from gand import plugins
from gand.api import DataInfo, EvalContext, Metric
from gand.errors import UsageError
from gand.evaluation import classifier as clf
from gand.evaluation import distances, features, plots
from gand.engine import interpolate as interp
from gand.hookspecs import hookimpl

@pytest.fixture(scope="module")
def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    return mnist_tensors()


def context(info: DataInfo, fake: torch.Tensor, real: torch.Tensor | None = None, **kw) -> EvalContext:
    return EvalContext(info=info, num_samples=kw.pop("num_samples", fake.shape[0]),
                       device=torch.device("cpu"), generate=lambda n: fake[:n],
                       real=lambda n: real[:n], reference="test", **kw)


# --- FID and KID ---------------------------------------------------------------------------


def test_frechet_distance_is_the_standard_formula():
    # N(0, 1) against N(3, 4) in 1-D: (0-3)² + 1 + 4 - 2·√(1·4) = 9 + 1 = 10.
    got = distances.frechet_distance(np.zeros(1), np.eye(1), np.full(1, 3.0), 4 * np.eye(1))
    assert got == pytest.approx(10.0, abs=1e-9)
    # Diagonal covariances in 2-D: Σ(√a − √b)² per dimension plus the mean term.
    got = distances.frechet_distance(np.zeros(2), np.diag([1.0, 9.0]), np.ones(2), np.diag([4.0, 1.0]))
    assert got == pytest.approx(2 + (1 - 2) ** 2 + (3 - 1) ** 2, abs=1e-9)


def test_fid_and_kid_with_classifier_features(mnist, mnist_classifier):
    x, _ = mnist
    ext = features.extractor("mnist-classifier", classifier=mnist_classifier)
    a, b = x[:1000], x[1000:2000]
    fa, fb = ext.features(a), ext.features(b)
    shifted = ext.features((b + 0.6).clamp(-1, 1))  # brighter digits on a grey background
    assert fa.shape == (1000, clf.FEATURES)
    self_fid = distances.fid(fa, fa)
    real_fid = distances.fid(fa, fb)
    shifted_fid = distances.fid(fa, shifted)
    assert abs(self_fid) < 1e-6 * max(1.0, real_fid)
    assert shifted_fid > 10 * real_fid > 0, (self_fid, real_fid, shifted_fid)
    kid_real, _ = distances.kid(fa, fb, subsets=10, subset_size=500)
    kid_shifted, _ = distances.kid(fa, shifted, subsets=10, subset_size=500)
    assert kid_shifted > 10 * abs(kid_real), (kid_real, kid_shifted)


def test_fid_metric_through_the_plugin_records_its_protocol(registry, mnist, mnist_classifier):
    x, _ = mnist
    info = DataInfo(spec="mnist:X", kind="image", shape=(1, 28, 28), num_classes=10)
    ctx = context(info, x[:400], x[400:800], classifier=mnist_classifier)
    fid = registry.metrics["fid"]()
    values = fid.compute(ctx)
    assert set(values) == {"fid"} and values["fid"] > 0
    p = fid.protocol(ctx)
    assert (p.extractor, p.num_samples, p.reference) == ("mnist-classifier", 400, "test")
    # kid reuses the generated features fid computed for the same evaluation.
    assert "kid" in registry.metrics["kid"]().compute(ctx)


# --- coverage ------------------------------------------------------------------------------


def _mixture(registry, name: str):
    dtype = registry.dataset_type(name)
    info = dtype.describe(None)
    return info, dtype.load(None, info, info.shape, torch.device("cpu"))


@pytest.mark.parametrize("name,modes", [("ring8", 8), ("grid25", 25)])
def test_coverage_of_real_samples_is_full(registry, name, modes):
    torch.manual_seed(0)
    info, src = _mixture(registry, name)
    ctx = context(info, src.sample(2500).x)
    metric = registry.metrics["coverage"]()
    values = metric.compute(ctx)
    assert values["modes"] == modes
    assert values["hq_percent"] > 95
    assert values["mode_kl"] < 0.05
    assert metric.protocol(ctx).num_samples == 2500


def test_coverage_of_one_mode_is_one_with_kl_ln8(registry):
    torch.manual_seed(0)
    info, _ = _mixture(registry, "ring8")
    centre = torch.tensor(info.extra["modes"][3])
    fake = centre + info.extra["std"] * torch.randn(2500, 2)
    values = registry.metrics["coverage"]().compute(context(info, fake))
    assert values["modes"] == 1
    assert values["mode_kl"] == pytest.approx(math.log(8), abs=1e-9)
    # Far from every mode: nothing is high-quality, no mode is captured, no KL to report.
    far = registry.metrics["coverage"]().compute(context(info, torch.full((2500, 2), 5.0)))
    assert far == {"modes": 0.0, "hq_percent": 0.0}


def test_coverage_refuses_data_without_modes(registry):
    with pytest.raises(UsageError, match="gauss1d records none"):
        registry.metrics["coverage"]().check(registry.dataset_type("gauss1d").describe(None), None)
    mnist = registry.dataset_type("mnist").describe(str(MNIST))
    with pytest.raises(UsageError, match="metric coverage takes vector data"):
        registry.metrics["coverage"]().check(mnist, None)


# --- class coverage ------------------------------------------------------------------------


def test_class_coverage_on_real_mnist_and_one_class(registry, mnist, mnist_classifier):
    x, y = mnist
    info = DataInfo(spec="mnist:X", kind="image", shape=(1, 28, 28), num_classes=10)
    metric = registry.metrics["class-coverage"]()
    with pytest.raises(UsageError, match="needs the MNIST classifier"):
        metric.check(info, None)
    real = metric.compute(context(info, x[:2000], classifier=mnist_classifier))
    assert real["classes"] == 10
    assert real["class_kl"] < 0.03, real
    threes = x[y == 3][:500]
    one = metric.compute(context(info, threes, classifier=mnist_classifier))
    # The session's two-epoch classifier is ~97% right, so a few 3s pass for 5s or 8s: near
    # ln 10, not at it.
    assert one["classes"] <= 3, one
    assert math.log(10) - 0.45 < one["class_kl"] <= math.log(10), one
    # All predictions in one class: exactly ln 10.
    probs = torch.zeros(100, 10)
    probs[:, 3] = 1.0
    from gand_plugins.metrics import class_coverage

    exact = class_coverage(probs)
    assert exact["classes"] == 1 and exact["class_kl"] == pytest.approx(math.log(10), abs=1e-12)


# --- diversity -----------------------------------------------------------------------------


def test_diversity_warns_on_collapse_only(registry):
    torch.manual_seed(0)
    info, src = _mixture(registry, "ring8")
    real = src.sample(1000).x
    warnings: list[str] = []
    metric = registry.metrics["diversity"]()
    ok = metric.compute(context(info, src.sample(1000).x, real, warn=warnings.append,
                                options={"collapse_threshold": 0.5}))
    assert 0.9 < ok["diversity"] < 1.1 and not warnings
    collapsed = real[:1] + 0.01 * torch.randn(1000, 2)
    bad = metric.compute(context(info, collapsed, real, warn=warnings.append,
                                 options={"collapse_threshold": 0.5}))
    assert bad["diversity"] < 0.1
    assert len(warnings) == 1 and warnings[0].startswith("possible mode collapse")


# --- the hook ------------------------------------------------------------------------------


class _Inline:
    """A small metric plugin registered in a fresh manager."""

    class Norm(Metric):
        name = "mean-norm"
        directions = {"norm": "min"}
        headline = "norm"

        def compute(self, ctx):
            return {"norm": float(ctx.generate(ctx.num_samples).norm(dim=1).mean())}

    @staticmethod
    @hookimpl
    def gand_register_metrics():
        return [_Inline.Norm]


class _Duplicate:
    @staticmethod
    @hookimpl
    def gand_register_metrics():
        return [_Inline.Norm]


def test_metric_hook_registers_and_rejects_duplicates():
    reg = plugins.load(extra=(_Inline,))
    assert {"fid", "kid", "coverage", "class-coverage", "diversity", "mean-norm"} <= set(reg.metrics)
    info = DataInfo(spec="ring8", kind="vector", shape=(2,))
    values = reg.metrics["mean-norm"]().compute(context(info, torch.ones(10, 2) * 3.0))
    assert values["norm"] == pytest.approx(math.sqrt(18))
    reg = plugins.load(extra=(_Inline, _Duplicate))  # both are left out, the rest load
    assert "mean-norm" not in reg.metrics and "fid" in reg.metrics
    assert [p.error for p in reg.plugins if p.error] == [
        "metric 'mean-norm' is registered by both _Inline and _Duplicate"] * 2


# --- extractors ----------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_inception_missing_weights_names_the_file(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("GAND_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("GAND_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    expected = tmp_path / "empty-hub" / "hub" / "checkpoints" / features.INCEPTION_FILE
    assert features.inception_weights_path() == expected
    with pytest.raises(UsageError, match="inception_v3_google-0cc3c7bd.pth") as e:
        features.extractor("inception")
    assert str(expected) in str(e.value) and "never downloads" in str(e.value)
    monkeypatch.setenv("GAND_INCEPTION_WEIGHTS", str(tmp_path / "mine.pth"))
    with pytest.raises(UsageError, match="mine.pth"):
        features.extractor("inception")


def test_inception_loads_local_weights_without_network(tmp_path, monkeypatch, no_network):
    from torchvision.models import inception_v3

    # Random weights of the right architecture stand in for the real file (no download).
    weights = tmp_path / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), weights)
    monkeypatch.setenv("GAND_INCEPTION_WEIGHTS", str(weights))
    ext = features.extractor("inception")
    out = ext.features(torch.rand(2, 1, 28, 28) * 2 - 1)
    assert out.shape == (2, 2048) and torch.isfinite(out).all()
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    monkeypatch.setenv("GAND_INCEPTION_WEIGHTS", str(bad))
    with pytest.raises(UsageError, match="does not hold InceptionV3 weights"):
        features.extractor("inception")


def test_classifier_file_is_weights_only_and_checked(tmp_path, mnist_classifier):
    state = torch.load(mnist_classifier, weights_only=True)
    assert state["format"] == clf.FORMAT and state["meta"]["holdout_accuracy"] > 0.9
    with pytest.raises(UsageError, match="does not exist"):
        clf.load(tmp_path / "nope.pt")
    other = tmp_path / "other.pt"
    torch.save({"format": "something"}, other)
    with pytest.raises(UsageError, match="is not a gand MNIST classifier"):
        clf.load(other)
    old = tmp_path / "old.pt"  # an earlier gand's classifier (no batch norm): retrain, not crash
    torch.save({"format": "gand-mnist-classifier/1", "meta": {}, "state_dict": {}}, old)
    with pytest.raises(UsageError, match=r"written by another gand version "
                                         r"\(gand-mnist-classifier/1, this one reads "):
        clf.load(old)


# --- plots and interpolation ---------------------------------------------------------------


def test_plot_has_the_declared_pixel_size(tmp_path):
    from PIL import Image

    rows = [{"step": s, "key": k, "value": v} for s in range(1, 200)
            for k, v in (("d_loss", 1.0 / s), ("g_loss", math.log(s + 1)))]
    evals = [{"step": s, "key": "fid", "value": 100.0 / s} for s in (50, 100, 150)]
    series = {"a": {"metrics": rows, "evaluations": evals}, "b": {"metrics": rows, "evaluations": []}}
    out = plots.plot(series, tmp_path / "p.png", "two runs")
    assert plots.panels(series) == ["losses", "fid"]
    with Image.open(out) as im:
        assert im.size == plots.expected_size(2) == (1000, 350)


def test_slerp_and_lerp_paths():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(2, 100, generator=g)
    for method in interp.METHODS:
        p = interp.path(z0, z1, 7, method)
        assert p.shape == (7, 100)
        assert torch.allclose(p[0], z0, atol=1e-5) and torch.allclose(p[-1], z1, atol=1e-5)
    mid_slerp = interp.path(z0, z1, 3, "slerp")[1].norm()
    mid_lerp = interp.path(z0, z1, 3, "lerp")[1].norm()
    assert mid_slerp > mid_lerp  # slerp keeps a Gaussian latent's typical norm
    corners = torch.randn(4, 100, generator=g)
    grid = interp.plane(corners, 5, "lerp")
    assert grid.shape == (25, 100)
    for i, c in zip((0, 4, 20, 24), corners):
        assert torch.allclose(grid[i], c, atol=1e-5)
    with pytest.raises(UsageError, match="--steps 1 is invalid"):
        interp.check(1, "slerp")


# --- the evaluation config and the trainer's evaluate callback ----------------------------


def test_default_metrics_follow_the_data_and_what_is_at_hand(registry, mnist_classifier,
                                                             tmp_path, monkeypatch):
    from gand.evaluation import spec

    monkeypatch.delenv("GAND_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("GAND_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    ring = registry.dataset_type("ring8").describe(None)
    digits = registry.dataset_type("mnist").describe(str(MNIST))
    assert spec.eval_config(registry, ring, every=10)["metrics"] == ["coverage", "diversity"]
    # No classifier and no InceptionV3 weights: nothing to take features with.
    assert spec.eval_config(registry, digits, every=10)["metrics"] == ["diversity"]
    cfg = spec.eval_config(registry, digits, every=10, classifier=mnist_classifier, best_by="fid",
                           sets={"collapse_threshold": "0.3"})
    assert cfg["metrics"] == ["class-coverage", "diversity", "fid", "kid"]
    assert cfg["best_by"] == {"metric": "fid", "key": "fid", "direction": "min"}
    assert cfg["options"] == {"collapse_threshold": 0.3} and cfg["num_samples"] == 1000
    assert spec.eval_config(registry, ring, every=5, best_by="mode_kl")["best_by"]["direction"] == "min"
    assert spec.eval_config(registry, ring) is None


def test_evaluating_while_training_changes_no_training_number(registry, tmp_path):
    """The evaluate callback runs after each evaluated step's checkpoint and leaves RNGs be."""
    from gand.engine.trainer import Hooks, Run, train
    from gand.evaluation.run import Evaluator
    from gand.jobspec import build_config

    cfg = build_config(registry, variant="gan", data="ring8", steps=30, seed=4,
                       checkpoint_every=0, sample_every=0,
                       evaluation={"every": 10, "metrics": ["coverage", "diversity"]})
    finals, seen = [], []
    for evaluate in (False, True):
        run = Run.build(cfg, registry, device="cpu")
        hooks = Hooks(checkpoint=lambda step, *a: seen.append(("ckpt", step)) if evaluate else None)
        if evaluate:
            ev = Evaluator(run, registry, ["coverage", "diversity"], data=run.data[0])
            hooks.evaluate = lambda step: seen.append(("eval", step, ev.evaluate(step)))
        train(run, tmp_path / str(evaluate), hooks)
        finals.append(torch.cat([p.detach().flatten() for p in run.models.G.parameters()]))
    assert torch.equal(finals[0], finals[1])
    assert [s[:2] for s in seen] == [("ckpt", 10), ("eval", 10), ("ckpt", 20), ("eval", 20),
                                     ("ckpt", 30), ("eval", 30)]
    results = seen[-1][2]
    assert [r.metric for r in results] == ["coverage", "diversity"]
    assert results[0].num_samples == 2500 and results[0].reference == "ring8: 8 modes, std 0.01"
