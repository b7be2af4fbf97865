"""Real learning in a bounded number of CPU steps, in-process with fixed seeds.

`gan` matches N(0, 1) on gauss1d, covers all 8 modes of ring8, and `cgan` on MNIST draws the
digit it is asked for, as judged by a small classifier trained here on the same MNIST files.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import MNIST
from torch import nn

from gand import plugins
from gand.engine.trainer import Hooks, Run, train
from gand.jobspec import build_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def trained(registry, tmp_path: Path, variant: str, data: str, steps: int, sets: list[str],
            seed: int = 0, preset: str | None = None) -> Run:
    cfg = build_config(registry, variant=variant, data=data, steps=steps, sets=sets, seed=seed,
                       device="cpu", checkpoint_every=0, sample_every=0, preset=preset)
    run = Run.build(cfg, registry)
    assert train(run, tmp_path, Hooks()).reason == "completed"
    return run


def samples(run: Run, n: int, **kwargs) -> torch.Tensor:
    return run.variant.sample(run.models, n, generator=torch.Generator().manual_seed(0), **kwargs)


def test_gan_matches_a_standard_normal(registry, tmp_path):
    # The lecture's 1-D GAN oscillates around N(0, 1); the EMA of G (what generate uses)
    # averages the oscillation out: mean and std land within 0.1 in a few hundred steps.
    run = trained(registry, tmp_path, "gan", "gauss1d", 500, ["ema=0.99"])
    x = samples(run, 5000).numpy().ravel()
    assert abs(x.mean()) < 0.1 and abs(x.std() - 1) < 0.1, (x.mean(), x.std())


def test_gan_covers_all_eight_modes_of_ring8(registry, tmp_path):
    # gan's plain defaults (lr 1e-3 without EMA) leave some modes empty after 2000 steps; lr
    # 2e-3 with an EMA of G covers them all in 1000 — without the rest of gan's ring8 recipe
    # (packing, batch 2048, lr decay), which the next test and docs/quality.md measure.
    run = trained(registry, tmp_path, "gan", "ring8", 1000,
                  ["ema=0.99", "lr=2e-3", "pack=1", "batch_size=256", "lr_decay=0"])
    x = samples(run, 5000).numpy()
    centres = np.array([[math.cos(2 * math.pi * k / 8), math.sin(2 * math.pi * k / 8)] for k in range(8)])
    near = np.linalg.norm(x[:, None, :] - centres[None], axis=2) < 0.1
    # Modes are 0.77 apart with std 0.01: 0.1 (ten std) is unambiguous. Every mode holds at
    # least 1% of the samples (12.5% is perfect), and most samples sit on a mode: a generator
    # spreading over the whole circle would put only 25% within 0.1 of one.
    assert near.mean(0).min() >= 0.01, near.mean(0)
    assert near.any(1).mean() >= 0.5, near.any(1).mean()


def test_the_default_ring8_recipe_beats_the_lecture_preset(registry, tmp_path):
    # The same seed and the same few hundred generator steps: gand's defaults for ring8 (a
    # mixture of generators, EMA, packing, a faster Adam, lr decay) against the lecture's recipe (5 D steps per G step).
    from gand_plugins.metrics import mode_coverage

    def coverage(run: Run) -> dict[str, float]:
        info = run.data[0].info
        return mode_coverage(samples(run, 2500), torch.tensor(info.extra["modes"]),
                             info.extra["std"])

    good = coverage(trained(registry, tmp_path, "gan", "ring8", 800, [], seed=3))
    lecture = coverage(trained(registry, tmp_path, "gan", "ring8", 800, [], seed=3,
                               preset="lecture"))
    # Margins, not tuned thresholds: more modes than the lecture, and a mode histogram at
    # least four times closer to uniform. Measured at 800 steps on seeds 0, 1, 3: gand (with
    # its mixture of 32 generators) 8, 8, 8 modes with KL 0.001, 0.08, 0.005; the lecture 7, 3,
    # 1 modes with KL 1.15, 1.15, 2.08. High quality is no margin this early (gand 99%, 62%,
    # 84%): the lr decay has barely begun.
    assert good["modes"] > lecture["modes"], (good, lecture)
    assert good["mode_kl"] * 4 <= lecture["mode_kl"], (good, lecture)


def digit_classifier(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A small CNN trained one epoch on 9000 of the images; checked on the other 1000."""
    g = torch.Generator().manual_seed(0)
    clf = nn.Sequential(nn.Conv2d(1, 16, 5, 2, 2), nn.ReLU(), nn.Conv2d(16, 32, 5, 2, 2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
    torch.manual_seed(0)
    for layer in clf:
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    opt = torch.optim.Adam(clf.parameters(), 1e-3)
    perm = torch.randperm(len(x), generator=g)
    train_idx, test_idx = perm[:-1000], perm[-1000:]
    for i in range(0, len(train_idx), 64):
        idx = train_idx[i:i + 64]
        loss = F.cross_entropy(clf(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    with torch.no_grad():
        acc = (clf(x[test_idx]).argmax(1) == y[test_idx]).float().mean().item()
    assert acc > 0.85, f"the judge itself is weak: {acc:.2f} held-out accuracy"
    return clf


def test_cgan_draws_the_requested_digit(registry, tmp_path):
    # A small conditional DCGAN for 400 steps of 32 (about 1.3 epochs of the 10k images).
    run = trained(registry, tmp_path, "cgan", f"mnist:{MNIST}", 400,
                  ["ngf=16", "ndf=16", "batch_size=32", "lr=5e-4", "nz=32", "n_embed=32",
                   "label_smoothing=false"])
    clf = digit_classifier(run.data[0].x, run.data[0].y)
    with torch.no_grad():
        agree = [(clf(samples(run, 50, label=k)).argmax(1) == k).float().mean().item()
                 for k in range(10)]
    # Chance is 0.1; an unconditional G scores about that. Most digits must come out right.
    assert np.mean(agree) >= 0.6 and sum(a > 0.5 for a in agree) >= 6, np.round(agree, 2)
