"""The anti-collapse tricks change what D sees (gand.engine.tricks), and presets set options.

Each trick is checked on what reaches D's layers, not on the option parsing: packing feeds D
batch/m rows of m× features through a first layer m times as wide; minibatch-std appends a
feature holding the batch's spread; spectral norm brings every weight's largest singular value
to 1; instance noise moves D's real inputs by about σ early and not at the end.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gand.engine import tricks
from gand.engine.trainer import Run
from gand.jobspec import build_config

pytestmark = pytest.mark.usefixtures("one_thread")


def run_for(registry, variant="gan", data="ring8", sets=(), steps=10, **kw) -> Run:
    # gan's recipe for ring8 packs by default: these tests start from an unpacked D.
    sets = list(sets) if any(s.startswith("pack=") for s in sets) else ["pack=1", *sets]
    cfg = build_config(registry, variant=variant, data=data, steps=steps, sets=sets,
                       seed=0, device="cpu", checkpoint_every=0, sample_every=0, **kw)
    return Run.build(cfg, registry)


def layers(module: nn.Module, kind=nn.Linear) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


def inputs_of(layer: nn.Module) -> list[torch.Tensor]:
    """A list that fills with every input `layer` receives from now on."""
    seen: list[torch.Tensor] = []
    layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen


def test_packing_feeds_d_batch_over_m_rows_of_m_samples(registry):
    plain = run_for(registry, sets=["batch_size=64"])
    packed = run_for(registry, sets=["batch_size=64", "pack=4"])
    first_plain, first = layers(plain.models.D)[0], layers(packed.models.D)[0]
    assert (first_plain.in_features, first.in_features) == (2, 8)   # the first layer widens ×4
    assert layers(packed.models.G)[0].in_features == layers(plain.models.G)[0].in_features

    seen = inputs_of(first)
    packed.variant.train_step(packed.models, packed.loss, packed.context(1))
    # d_steps=1: D judges real, fake, then fake again for G: every call 64/4 rows of 4·2.
    assert [tuple(x.shape) for x in seen] == [(16, 8)] * 3
    x = torch.randn(12, 2)
    seen.clear()
    scores = packed.models.D(x)
    assert scores.shape[0] == 3
    # Each row holds 4 consecutive samples side by side.
    assert torch.equal(seen[0], x.reshape(3, 8))
    assert torch.equal(seen[0][1, 2:4], x[5])


def test_packing_reaches_images_as_channels_and_the_penalty_per_pack(registry):
    from gand_plugins.regularizers import _grad_norms
    from support import MNIST

    run = run_for(registry, "wgan-gp", f"mnist:{MNIST}",
                  ["pack=2", "ngf=8", "ndf=8", "batch_size=8"], steps=2)
    first = layers(run.models.D, nn.Conv2d)[0]
    assert first.in_channels == 2
    x = torch.randn(8, 1, 28, 28)
    norms = _grad_norms(run.models.D, x)
    assert norms.shape == (4,)  # one gradient norm per pack, over both of its images
    report = run.variant.train_step(run.models, run.loss, run.context(1))
    assert math.isfinite(float(report["gp"]))


def test_minibatch_std_appends_the_batch_spread_before_the_last_layer(registry):
    run = run_for(registry, sets=["mbstd=8", "batch_size=64"])
    hidden = run.config.options["hidden"]
    wrapped = [m for m in run.models.D.modules() if isinstance(m, tricks.MinibatchStd)]
    assert len(wrapped) == 1
    last = wrapped[0].layer
    assert last.in_features == hidden + 1 and last is layers(run.models.D)[-1]
    feats = inputs_of(last)
    before = inputs_of(layers(run.models.D)[-2])  # the hidden features mbstd summarises
    x = torch.randn(8, 2)
    with torch.no_grad():
        run.models.D(x)
    h = torch.nn.functional.leaky_relu(layers(run.models.D)[-2](before[0]), 0.2)
    expected = h.std(0, unbiased=False).mean()  # one group of 8: the batch's own spread
    assert torch.allclose(feats[0][:, :hidden], h)
    assert torch.allclose(feats[0][:, hidden], expected.expand(8), atol=1e-5)
    # A collapsed batch (8 copies of one sample) shows a spread of zero.
    with torch.no_grad():
        run.models.D(x[:1].repeat(8, 1))
    assert feats[-1][:, hidden].abs().max() < 1e-3


def test_minibatch_std_groups_consecutive_examples():
    x = torch.arange(8.0).view(8, 1)  # groups of 4 over 8 examples: members i, i+2, i+4, i+6
    out = tricks.minibatch_std(x, 4)
    evens, odds = torch.tensor([0., 2, 4, 6]), torch.tensor([1., 3, 5, 7])
    assert torch.allclose(out[0::2], evens.std(unbiased=False).expand(4), atol=1e-5)
    assert torch.allclose(out[1::2], odds.std(unbiased=False).expand(4), atol=1e-5)


def largest_singular_value(layer: nn.Module) -> float:
    return float(torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2))


@pytest.mark.parametrize("variant, data, sets, kind", [
    ("gan", "ring8", ["hidden=64"], nn.Linear),
    ("dcgan", "mnist:{MNIST}", ["ngf=8", "ndf=8", "batch_size=8"], nn.Conv2d),
])
def test_spectral_norm_brings_every_weight_of_d_to_norm_one(registry, variant, data, sets, kind):
    from support import MNIST

    data = data.format(MNIST=MNIST)
    plain = run_for(registry, variant, data, sets)
    normed = run_for(registry, variant, data, sets + ["d_norm=spectral"])
    assert all(abs(largest_singular_value(m) - 1) > 0.05 for m in layers(plain.models.D, kind))
    x = plain.data[0].sample(8).x
    with torch.no_grad():
        for _ in range(30):  # one power iteration per forward pass in training mode
            normed.models.D(x)
    values = [largest_singular_value(m) for m in layers(normed.models.D, kind)]
    assert values and all(abs(v - 1) < 0.05 for v in values), values


def test_spectral_norm_stays_on_a_replaced_layer_of_sagan(registry):
    from support import MNIST
    from torch.nn.utils import parametrize

    run = run_for(registry, "sagan", f"mnist:{MNIST}", ["ngf=8", "ndf=8", "batch_size=8",
                                                        "pack=2", "mbstd=2"])
    convs = [m for m in layers(run.models.D, nn.Conv2d) if m.kernel_size != (1, 1)]
    assert all(parametrize.is_parametrized(m, "weight") for m in convs)


def test_instance_noise_moves_what_d_sees_and_anneals_to_zero(registry):
    def spread_of_real_inputs(run: Run, step: int) -> float:
        seen = inputs_of(layers(run.models.D)[0])
        run.variant.train_step(run.models, run.loss, run.context(step))
        # ring8's real points lie on the unit circle (std 0.01): off it is noise.
        return float((seen[0].norm(dim=1) - 1).abs().mean())

    noisy = run_for(registry, sets=["instance_noise=0.5"], steps=100)
    assert spread_of_real_inputs(noisy, 1) > 0.2          # σ = 0.5 at the start
    assert spread_of_real_inputs(noisy, 100) < 0.05       # σ/100 at the last step
    assert spread_of_real_inputs(run_for(registry), 1) < 0.05
    opts = {"instance_noise": 0.5}
    assert [tricks.noise_std(opts, s, 100) for s in (1, 51, 101)] == [0.5, 0.25, 0.0]


def test_a_checkpoint_of_a_tricked_d_restores_it(registry):
    sets = ["pack=2", "mbstd=4", "d_norm=spectral", "batch_size=64", "instance_noise=0.1"]
    run = run_for(registry, sets=sets)
    for step in (1, 2, 3):
        run.variant.train_step(run.models, run.loss, run.context(step))
    state = run.state(3)
    again = run_for(registry, sets=sets)
    assert again.restore(state) == 3
    x = torch.randn(16, 2)
    run.models.train(False)
    again.models.train(False)
    with torch.no_grad():
        assert torch.equal(run.models.D(x), again.models.D(x))


def test_lr_decay_lowers_the_rates_at_the_end_and_survives_a_halving(registry, tmp_path):
    from gand.engine.trainer import Hooks, train

    run = run_for(registry, sets=["lr_decay=0.5", "lr=1e-3"], steps=10)
    opt = run.models.optimizers["G"]
    rates = []

    def tick(step):  # after each step of the trainer's loop
        rates.append(opt.param_groups[0]["lr"])
        if step == 7:
            opt.param_groups[0]["lr"] *= 0.5  # what a rollback does

    assert train(run, tmp_path, Hooks(tick=tick)).reason == "completed"
    assert rates[:5] == [1e-3] * 5
    assert rates[5] == pytest.approx(1e-3) and rates[6] == pytest.approx(0.8e-3)
    # After the halving, the schedule goes on from the halved rate: 2/5 of it at step 9.
    assert rates[8] == pytest.approx(0.5 * 0.4e-3)


def test_a_preset_sets_options_under_explicit_values_and_is_recorded(registry):
    cfg = build_config(registry, variant="gan", data="ring8", preset="lecture",
                       sets=["hidden=64"], device="cpu")
    o = cfg.options
    assert (o["d_steps"], o["lr"], o["batch_size"], o["beta1"], o["label_smoothing"],
            o["ema"], o["pack"]) == (5, 1e-3, 64, 0.9, False, 0.0, 1)
    assert o["hidden"] == 64 and cfg.preset == "lecture"
    assert cfg.to_dict()["preset"] == "lecture"
    default = build_config(registry, variant="gan", data="ring8", device="cpu")
    # gan's own recipe for ring8 (its data defaults) differs from the lecture's.
    assert default.preset is None and default.options["ema"] > 0 and default.options["pack"] > 1
    assert build_config(registry, variant="gan", data="ring8", steps=7,
                        device="cpu").steps == 7
