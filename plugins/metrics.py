"""gand's built-in metrics: fid, kid, coverage, class-coverage and diversity.

They register through `gand_register_metrics` like a third party's would. FID/KID compare
feature statistics (InceptionV3 or gand's MNIST classifier); coverage follows the VEEGAN/PacGAN
protocol on the synthetic mixtures; class-coverage labels samples with the MNIST classifier;
diversity is the lecture's mean-pairwise-distance check for mode collapse.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from gand.api import DataInfo, EvalContext, Metric, MetricProtocol, Option
from gand.errors import UsageError
from gand.evaluation import distances, features
from gand.hookspecs import hookimpl

COVERAGE_SAMPLES = 2500  # the published protocol's sample count
HQ_STDS = 3.0            # a sample within 3 std of its nearest mode is high-quality
CONFIDENT = 0.9          # softmax probability above which a class prediction counts as confident


def _extractor(ctx: EvalContext) -> features.Extractor:
    """The run's feature extractor, loaded once and shared by fid and kid."""
    name = ctx.extractor or features.default_extractor(ctx.classifier)
    key = ("extractor", name)
    if key not in ctx.cache:
        ctx.cache[key] = features.extractor(name, classifier=ctx.classifier, device=ctx.device)
    return ctx.cache[key]


def _feature_sets(ctx: EvalContext) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, generated) features; the real ones are computed once per run and size."""
    ext = _extractor(ctx)
    real_key = ("real-features", ext.name, ctx.num_samples)
    if real_key not in ctx.cache:
        ctx.cache[real_key] = ext.features(ctx.real(ctx.num_samples))
    # One evaluation's generated features, shared by fid and kid (keyed by its context).
    held = ctx.cache.get(("fake-features", ext.name))
    if held is None or held[0] is not ctx:
        held = ctx.cache[("fake-features", ext.name)] = (ctx, ext.features(ctx.generate(ctx.num_samples)))
    return ctx.cache[real_key], held[1]


class _FeatureMetric(Metric):
    data_kinds = frozenset({"image"})
    uses_extractor = True

    def protocol(self, ctx: EvalContext) -> MetricProtocol:
        name = ctx.extractor or features.default_extractor(ctx.classifier)
        return MetricProtocol(name, ctx.num_samples, ctx.reference)


class FID(_FeatureMetric):
    name = "fid"
    help = "Fréchet distance between real and generated feature statistics (lower is better)"
    directions = {"fid": "min"}
    headline = "fid"

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        real, fake = _feature_sets(ctx)
        return {"fid": distances.fid(real, fake)}


class KID(_FeatureMetric):
    name = "kid"
    help = "kernel inception distance, unbiased MMD² with a cubic kernel (lower is better)"
    directions = {"kid": "min"}
    headline = "kid"

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        real, fake = _feature_sets(ctx)
        # Subsets of half the samples at most, so that their spread (kid_std) means something.
        mean, std = distances.kid(real, fake, subset_size=min(1000, max(2, ctx.num_samples // 2)))
        return {"kid": mean, "kid_std": std}


def _kl_to_uniform(counts: torch.Tensor) -> float:
    """KL(p ‖ uniform) in nats for a histogram; ln K when everything is in one bin."""
    p = counts.double() / counts.sum()
    nz = p[p > 0]
    return float((nz * torch.log(nz * counts.numel())).sum())


def mode_coverage(x: torch.Tensor, modes: torch.Tensor, std: float) -> dict[str, float]:
    """The VEEGAN/PacGAN coverage numbers for samples `x` of a mixture with `modes`.

    A sample is high-quality when within 3 std of its nearest mode; a mode is captured when it
    is the nearest mode of at least one high-quality sample; the KL is that of the high-quality
    samples' mode histogram to uniform (absent when no sample is high-quality).
    """
    d = torch.cdist(x.double(), modes.double())
    nearest_d, nearest = d.min(1)
    hq = nearest_d <= HQ_STDS * std
    counts = torch.bincount(nearest[hq], minlength=modes.shape[0])
    out = {"modes": float((counts > 0).sum()), "hq_percent": 100.0 * float(hq.double().mean())}
    if int(hq.sum()):
        out["mode_kl"] = _kl_to_uniform(counts)
    return out


class Coverage(Metric):
    name = "coverage"
    help = "modes captured, % high-quality and mode KL on ring8/grid25 (VEEGAN protocol)"
    data_kinds = frozenset({"vector"})
    directions = {"modes": "max", "hq_percent": "max", "mode_kl": "min"}
    headline = "modes"

    def check(self, info: DataInfo, classifier: Optional[str]) -> None:
        super().check(info, classifier)
        if "modes" not in info.extra or "std" not in info.extra:
            raise UsageError(f"metric coverage needs a mixture with known modes (ring8, grid25); "
                             f"{info.spec} records none")

    def protocol(self, ctx: EvalContext) -> MetricProtocol:
        k, std = len(ctx.info.extra["modes"]), ctx.info.extra["std"]
        return MetricProtocol(None, COVERAGE_SAMPLES, f"{ctx.info.spec}: {k} modes, std {std}")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        modes = torch.tensor(ctx.info.extra["modes"], dtype=torch.float64)
        x = ctx.generate(COVERAGE_SAMPLES).cpu()
        return mode_coverage(x, modes, float(ctx.info.extra["std"]))


def class_coverage(probs: torch.Tensor) -> dict[str, float]:
    """Classes covered, KL(class histogram ‖ uniform) and % confident, from softmax rows.

    A class is covered when at least one sample in 10·K is predicted as it (1% for digits), so
    a stray misclassification does not count as a mode.
    """
    k = probs.shape[1]
    counts = torch.bincount(probs.argmax(1), minlength=k)
    share = counts.double() / counts.sum()
    return {"classes": float((share >= 1.0 / (10 * k)).sum()),
            "class_kl": _kl_to_uniform(counts),
            "confident_percent": 100.0 * float((probs.max(1).values >= CONFIDENT).double().mean())}


class ClassCoverage(Metric):
    name = "class-coverage"
    help = "classes covered and KL(class histogram ‖ uniform), labelled by the MNIST classifier"
    data_kinds = frozenset({"image"})
    directions = {"classes": "max", "class_kl": "min", "confident_percent": "max"}
    headline = "class_kl"
    needs_classifier = True

    def protocol(self, ctx: EvalContext) -> MetricProtocol:
        return MetricProtocol(features.ClassifierExtractor.name, ctx.num_samples,
                              "uniform over the classifier's classes")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        key = ("extractor", features.ClassifierExtractor.name)
        if key not in ctx.cache:
            ctx.cache[key] = features.extractor(key[1], classifier=ctx.classifier, device=ctx.device)
        return class_coverage(ctx.cache[key].predict(ctx.generate(ctx.num_samples)))


class Diversity(Metric):
    name = "diversity"
    help = ("mean pairwise distance of samples relative to real data; below the threshold it "
            "records a possible-mode-collapse event")
    directions = {"diversity": "max"}
    headline = "diversity"
    options = {"collapse_threshold": Option(float, 0.5, "diversity below which a collapse "
                                                        "warning is recorded", min=0.0)}

    def protocol(self, ctx: EvalContext) -> MetricProtocol:
        return MetricProtocol(None, min(ctx.num_samples, 1000), ctx.reference)

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        n = min(ctx.num_samples, 1000)
        fake = distances.mean_pairwise_distance(ctx.generate(n).cpu())
        real_key = ("real-pairwise", n)
        if real_key not in ctx.cache:
            ctx.cache[real_key] = distances.mean_pairwise_distance(ctx.real(n).cpu())
        real = ctx.cache[real_key]
        ratio = fake / real if real > 0 else math.inf
        threshold = ctx.options.get("collapse_threshold", 0.5)
        if ratio < threshold:
            ctx.warn(f"possible mode collapse: sample diversity {ratio:.3f} of the real data's "
                     f"(threshold {threshold})")
        return {"diversity": ratio, "pairwise_generated": fake, "pairwise_real": real}


@hookimpl
def gand_register_metrics():
    return [FID, KID, Coverage, ClassCoverage, Diversity]
