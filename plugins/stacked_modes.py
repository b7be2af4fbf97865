"""`stacked-modes`: mode coverage on Stacked MNIST, the VEEGAN/PacGAN protocol.

Each generated image's three channels are read as digits by gand's MNIST classifier; the
triple (R, G, B) is its mode, one of 1000. Over 26,000 samples, as in VEEGAN (Srivastava et
al. 2017) and PacGAN (Lin et al. 2018, Table 3), it reports the modes hit by at least one
sample and KL(q ‖ uniform), q being the generated mode histogram; beside the protocol, the %
of images whose three channels are all read with 90% confidence (`confident_percent`).
The anchors: DCGAN 99 modes / KL 3.4, PacDCGAN2 1000 modes / KL 0.06. Real Stacked MNIST
scores 1000 modes and KL 0.025 (the finite sample and MNIST's unequal class sizes; the
classifier adds 0.0004): the floor a perfect generator reaches.

A module of its own, registered through its own entry point: it needs nothing from the
general metrics but the KL helper and the confidence threshold.
"""
from __future__ import annotations

import torch

from gand.api import DataInfo, EvalContext, Metric, MetricProtocol, Option
from gand.errors import UsageError
from gand.evaluation import features
from gand.hookspecs import hookimpl
from gand_plugins.metrics import CONFIDENT, _kl_to_uniform

SAMPLES = 26_000   # the protocol's sample count (VEEGAN, PacGAN)
MODES = 1000       # 10 digits in each of 3 channels
PLACES = torch.tensor([100, 10, 1])  # the triple (r, g, b) is mode 100·r + 10·g + b


def triples(digits: torch.Tensor) -> torch.Tensor:
    """Mode indices 0..999 from an (N, 3) tensor of per-channel digit predictions."""
    return (digits.long().cpu() * PLACES).sum(1)


def mode_stats(modes: torch.Tensor) -> dict[str, float]:
    """Modes covered out of 1000 and KL(generated mode histogram ‖ uniform) in nats."""
    counts = torch.bincount(modes, minlength=MODES)
    return {"modes": float((counts > 0).sum()), "mode_kl": _kl_to_uniform(counts)}


def channel_probs(predict, x: torch.Tensor) -> torch.Tensor:
    """(N, 3, 10) class probabilities: each channel of each image classified as a grey image."""
    n, c, h, w = x.shape
    return predict(x.reshape(n * c, 1, h, w)).reshape(n, c, -1)


def channel_digits(predict, x: torch.Tensor) -> torch.Tensor:
    """(N, 3) digit predictions, one per channel."""
    return channel_probs(predict, x).argmax(2)


def stacked_stats(probs: torch.Tensor) -> dict[str, float]:
    """The protocol's two numbers from (N, 3, 10) channel probabilities, and the % of images
    whose three channels are all read with confidence: the classifier puts every blob in some
    class, so modes and KL alone cannot tell digits from scribbles."""
    top = probs.max(2)
    out = mode_stats(triples(top.indices))
    out["confident_percent"] = 100.0 * float((top.values >= CONFIDENT).all(1).double().mean())
    return out


class StackedModes(Metric):
    name = "stacked-modes"
    help = ("Stacked MNIST: modes (digit triples) covered of 1000 and KL(mode histogram ‖ "
            "uniform) over 26,000 samples, each channel read by the MNIST classifier")
    data_kinds = frozenset({"image"})
    directions = {"modes": "max", "mode_kl": "min", "confident_percent": "max"}
    headline = "mode_kl"  # modes saturate at 1000 well before the histogram is flat
    needs_classifier = True
    options = {"stacked_samples": Option(int, SAMPLES, "generated samples stacked-modes "
                                                       "classifies (the protocol's: 26000)",
                                         min=100, max=100_000)}

    def check(self, info: DataInfo, classifier) -> None:
        if info.kind == "image" and info.shape[0] != 3:
            raise UsageError(f"metric {self.name} takes 3-channel images (one digit per "
                             f"channel, --data stacked-mnist:DIR); {info.spec} has "
                             f"{info.shape[0]} channel(s)")
        super().check(info, classifier)
        if "stacked_modes" not in info.extra:
            raise UsageError(f"metric {self.name} measures Stacked MNIST (--data "
                             f"stacked-mnist:DIR); {info.spec} has no digit triples")

    def _samples(self, ctx: EvalContext) -> int:
        return int(ctx.options.get("stacked_samples", SAMPLES))

    def protocol(self, ctx: EvalContext) -> MetricProtocol:
        return MetricProtocol(features.ClassifierExtractor.name, self._samples(ctx),
                              f"uniform over {MODES} digit triples")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        key = ("extractor", features.ClassifierExtractor.name)
        if key not in ctx.cache:
            ctx.cache[key] = features.extractor(key[1], classifier=ctx.classifier, device=ctx.device)
        x = ctx.generate(self._samples(ctx))
        if x.dim() != 4 or x.shape[1] != 3:
            raise UsageError(f"metric {self.name} takes 3-channel images; the generator made "
                             f"shape {tuple(x.shape[1:])}")
        return stacked_stats(channel_probs(ctx.cache[key].predict, x))


@hookimpl
def gand_register_metrics():
    return [StackedModes]
