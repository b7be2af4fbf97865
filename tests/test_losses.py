"""Loss and regulariser plugins, called through a fresh plugin manager, and every documented
variant × loss combination: it trains two steps, or submit refuses it with the reason.

In-process and small (tiny tensors, 2-step runs on ring8 or MNIST at width 8) so it stays fast.
"""
from __future__ import annotations

import math

import pytest
import torch
from support import MNIST
from torch import nn

from gand import plugins
from gand.api import StepContext, parse_options
from gand.engine.trainer import Run
from gand.errors import UsageError
from gand.jobspec import build_config, loss_class

W = torch.tensor([0.6, -0.3])  # a linear critic D(x) = x·w: ∇D = w everywhere, ‖w‖² = 0.45
REAL = torch.tensor([[1.0, 2.0], [0.5, -1.0], [-2.0, 0.0]])
FAKE = torch.tensor([[0.0, 1.0], [3.0, 1.0], [-1.0, -1.0]])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two busy cores: torch's intra-op threads would spin against the other processes.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def D(x: torch.Tensor) -> torch.Tensor:
    return x @ W


def ctx() -> StepContext:
    return StepContext(step=1, total_steps=1, batch_size=3, device=torch.device("cpu"),
                       options={}, data=[])


def make(registry, spec: str, **given):
    cls = loss_class(registry, spec)
    return cls(parse_options(cls.options, given))


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def bce(logit: float, target: float) -> float:
    return -(target * math.log(sig(logit)) + (1 - target) * math.log(1 - sig(logit)))


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


R = [float(v) for v in D(REAL)]   # 0.0, 0.6, -1.2
F_ = [float(v) for v in D(FAKE)]  # -0.3, 1.5, -0.3

# name, options, expected D loss, expected G loss: the formulas written out by hand.
FORMULAS = [
    ("bce", {}, mean(bce(r, 0.9) for r in R) + mean(bce(f, 0.1) for f in F_),
     mean(bce(f, 0.9) for f in F_)),
    ("bce", {"label_smoothing": "false"}, mean(bce(r, 1) for r in R) + mean(bce(f, 0) for f in F_),
     mean(bce(f, 1) for f in F_)),
    ("minimax", {}, mean(bce(r, 1) for r in R) + mean(bce(f, 0) for f in F_),
     mean(math.log(1 - sig(f)) for f in F_)),
    ("ls", {}, 0.5 * (mean((r - 1) ** 2 for r in R) + mean(f ** 2 for f in F_)),
     0.5 * mean((f - 1) ** 2 for f in F_)),
    ("wasserstein", {}, -(mean(R) - mean(F_)), -mean(F_)),
    ("hinge", {}, mean(max(0, 1 - r) for r in R) + mean(max(0, 1 + f) for f in F_), -mean(F_)),
    # A linear critic has ‖∇D‖ = ‖w‖ at every interpolate: the penalty is (‖w‖ − 1)² exactly.
    ("wgan-gp", {}, -(mean(R) - mean(F_)) + 10 * (math.sqrt(0.45) - 1) ** 2, -mean(F_)),
    ("wasserstein+gp", {"gp_weight": "5"}, -(mean(R) - mean(F_)) + 5 * (math.sqrt(0.45) - 1) ** 2,
     -mean(F_)),
    ("hinge+r1", {"r1_gamma": "4"}, mean(max(0, 1 - r) for r in R) + mean(max(0, 1 + f) for f in F_)
     + 0.5 * 4 * 0.45, -mean(F_)),
    ("ls+r1+gp", {}, 0.5 * (mean((r - 1) ** 2 for r in R) + mean(f ** 2 for f in F_))
     + 5 * 0.45 + 10 * (math.sqrt(0.45) - 1) ** 2, 0.5 * mean((f - 1) ** 2 for f in F_)),
    ("wasserstein+clip", {}, -(mean(R) - mean(F_)), -mean(F_)),
]


@pytest.mark.parametrize("spec,given,d_expected,g_expected", FORMULAS,
                         ids=[f"{f[0]}{'-' + '-'.join(f[1]) if f[1] else ''}" for f in FORMULAS])
def test_loss_values_match_the_formulas(registry, spec, given, d_expected, g_expected):
    loss = make(registry, spec, **given)
    d, _ = loss.d_loss(D, real=REAL, fake=FAKE, ctx=ctx())
    g, _ = loss.g_loss(D, real=REAL, fake=FAKE, ctx=ctx())
    assert d.item() == pytest.approx(d_expected, rel=1e-5, abs=1e-6)
    assert g.item() == pytest.approx(g_expected, rel=1e-5, abs=1e-6)


def test_gradient_penalties_report_their_raw_value_and_reach_d(registry):
    w = W.clone().requires_grad_(True)
    loss = make(registry, "hinge+r1+gp")
    d, report = loss.d_loss(lambda x: x @ w, real=REAL, fake=FAKE, ctx=ctx())
    assert report["r1"].item() == pytest.approx(0.45, rel=1e-5)
    assert report["gp"].item() == pytest.approx((math.sqrt(0.45) - 1) ** 2, rel=1e-5)
    d.backward()  # the penalties are differentiable in D's weights (create_graph)
    hinge_grad = -REAL.mean(0) + FAKE.mean(0)  # every hinge term is active for these points
    pen_grad = 10 * w.detach() + 10 * 2 * (math.sqrt(0.45) - 1) * W / math.sqrt(0.45)
    assert torch.allclose(w.grad, hinge_grad + pen_grad, atol=1e-5)


def test_clip_bounds_every_weight_after_a_d_step(registry):
    net = nn.Linear(4, 3)
    with torch.no_grad():
        net.weight.fill_(0.5)
        net.bias.fill_(-0.5)
    loss = make(registry, "wasserstein+clip", clip_value="0.02")
    loss.after_d_step(net, ctx())
    assert net.weight.abs().max().item() == pytest.approx(0.02)
    assert net.bias.min().item() == pytest.approx(-0.02)


def test_began_loss_weighs_fakes_by_k(registry):
    loss = make(registry, "began")
    loss.k = torch.tensor(0.25)
    err = lambda x: x.abs().sum(1)  # stands for D's per-example reconstruction error
    d, _ = loss.d_loss(err, real=REAL, fake=FAKE, ctx=ctx())
    assert d.item() == pytest.approx((3 + 1.5 + 2) / 3 - 0.25 * (1 + 4 + 2) / 3)
    assert loss.g_loss(err, real=REAL, fake=FAKE, ctx=ctx())[0].item() == pytest.approx(7 / 3)


# ---------------------------------------------------------------------------------------------
# Every documented combination: trains, or is refused at submit with the reason.

RING, DIGITS = "ring8", f"mnist:{MNIST}"
DATA = {"gan": RING, "wgan": RING, "wgan-gp": RING, "lsgan": RING, "began": RING,
        "dcgan": DIGITS, "cgan": DIGITS, "sagan": DIGITS}
LOSSES = ["bce", "minimax", "ls", "wasserstein", "hinge", "wgan-gp", "began"]
OUTPUTS = "needs a discriminator that outputs"
BATCHNORM = "uses BatchNorm"
# Which base losses each variant takes, written out (the docs' table); the rest are refused.
ACCEPTS = {
    "gan": {"bce", "minimax", "ls", "wasserstein", "hinge", "wgan-gp"},
    "dcgan": {"bce", "minimax", "ls", "wasserstein", "hinge"},  # wgan-gp: BatchNorm in D
    "cgan": {"bce", "minimax", "ls", "wasserstein", "hinge"},   # likewise
    "sagan": {"bce", "minimax", "ls", "wasserstein", "hinge", "wgan-gp"},
    "wgan": {"ls", "wasserstein", "hinge", "wgan-gp"},          # critic only
    "wgan-gp": {"ls", "wasserstein", "hinge", "wgan-gp"},
    "lsgan": {"ls", "wasserstein", "hinge", "wgan-gp"},
    "began": {"began"},                                        # autoencoder D
}
# (variant, data, loss, refusal or None when it must train, --set items)
BATCHNORM_D = {"dcgan", "cgan"}  # D has BatchNorm by default (d_norm=batch)
TABLE = [(v, DATA[v], l, None if l in ACCEPTS[v] else
          BATCHNORM if l == "wgan-gp" and v in BATCHNORM_D else OUTPUTS, [])
         for v in DATA for l in LOSSES]
TABLE += [
    ("gan", RING, "hinge+r1", None, []),
    ("gan", RING, "bce+gp", None, ["gp_weight=5"]),
    ("wgan", RING, "wasserstein+clip", None, ["clip_value=0.05"]),
    ("wgan", RING, "hinge+clip", None, []),
    ("wgan-gp", RING, "wasserstein+gp", None, []),
    ("wgan-gp", DIGITS, "wgan-gp", None, []),
    ("lsgan", DIGITS, "ls+r1", BATCHNORM, []),
    ("sagan", DIGITS, "hinge+r1", None, ["r1_gamma=1"]),
    ("dcgan", DIGITS, "hinge+r1", BATCHNORM, []),
    ("dcgan", DIGITS, "hinge+r1", None, ["d_norm=instance"]),
    ("dcgan", DIGITS, "wasserstein+gp", None, ["d_norm=none"]),
    ("cgan", DIGITS, "bce+r1", None, ["d_norm=none"]),
    ("wgan", DIGITS, "wgan-gp", BATCHNORM, []),  # wgan's image critic keeps BatchNorm
    ("wgan", DIGITS, "wgan-gp", None, ["d_norm=none"]),
    ("wgan", RING, "wasserstein+clip+clip", "clip is given twice", []),
    ("wgan", RING, "wasserstein+gp+clip", "gp cannot be combined with clip", []),
    ("wgan-gp", RING, "wgan-gp+clip", "cannot be combined with wgan-gp", []),
    ("wgan-gp", RING, "wgan-gp+gp", "both set option 'gp_weight'", []),
    ("gan", RING, "gp", "gp is a regulariser, not a loss", []),
    ("gan", RING, "bce+hinge", "hinge is a loss; give one loss, then regularisers", []),
    ("gan", RING, "bce+nope", "unknown loss 'nope'", []),
    ("gan", RING, "bce+", "has an empty part", []),
    ("began", RING, "began+r1", "r1 suits losses on", []),
    ("gan", RING, "bce", "--set gp_weight: unknown setting", ["gp_weight=5"]),
    ("gan", RING, "bce", "augments images; ring8 is vector data", ["ada=true"]),
    ("began", DIGITS, "began", "does not support adaptive discriminator augmentation", ["ada=true"]),
    ("dcgan", DIGITS, "hinge", None, ["ada=true", "ada_target=0.5"]),
    ("sagan", DIGITS, "hinge", None, ["ada=true"]),
]


@pytest.fixture(scope="module")
def mnist_source(registry):
    """MNIST loaded once for every image combination (the runs share the tensors)."""
    cfg = build_config(registry, variant="dcgan", data=f"mnist:{MNIST}", steps=2)
    return Run.build(cfg, registry, device="cpu").data


@pytest.mark.parametrize("variant,data,loss,refusal,sets", TABLE,
                         ids=[f"{v}-{d[:5]}-{l}{'-' + '-'.join(s) if s else ''}"
                              for v, d, l, _, s in TABLE])
def test_combination_trains_or_is_refused(registry, mnist_source, variant, data, loss, refusal, sets):
    small = ["ngf=8", "ndf=8"] if data.startswith("mnist") else ["hidden=16"]
    submit = lambda: build_config(registry, variant=variant, data=data, loss=loss, steps=2,
                                  batch_size=8, sets=small + sets, seed=1, device="cpu")
    if refusal:
        with pytest.raises(UsageError) as e:
            submit()
        assert refusal in str(e.value) and "\n" not in str(e.value)
        return
    cfg = submit()
    assert cfg.loss == loss
    run = Run.build(cfg, registry, load_data=data == RING)
    if not run.data:
        run.data = mnist_source
    for step in (1, 2):
        report = run.variant.train_step(run.models, run.loss, run.context(step))
        assert all(torch.isfinite(v).all() for v in report.values()), report
    if "clip_value=0.05" in sets:
        assert max(p.abs().max().item() for p in run.models.D.parameters()) <= 0.05 + 1e-7
    if "gp" in loss:
        assert "gp" in report


# (variant, data, optimizer class, G lr, D lr, Adam betas or None, d_steps, option checks)
DEFAULTS = [
    ("wgan", RING, torch.optim.RMSprop, 5e-5, 5e-5, None, 5, {"clip_value": 0.01}),
    ("wgan-gp", DIGITS, torch.optim.Adam, 1e-4, 1e-4, (0.0, 0.9), 5, {"gp_weight": 10.0, "d_norm": "none"}),
    ("sagan", DIGITS, torch.optim.Adam, 1e-4, 4e-4, (0.0, 0.9), 1, {"d_norm": "none"}),
    ("began", RING, torch.optim.Adam, 1e-4, 1e-4, (0.5, 0.999), 1, {"gamma": 0.5, "lambda_k": 0.001}),
    ("gan", RING, torch.optim.Adam, 2e-3, 3e-4, (0.5, 0.999), 2, {}),  # lr_g, lr_d, d_steps given
]


@pytest.mark.parametrize("variant,data,opt_cls,lr_g,lr_d,betas,d_steps,checks", DEFAULTS,
                         ids=[d[0] for d in DEFAULTS])
def test_variant_defaults_and_training_tricks(registry, variant, data, opt_cls, lr_g, lr_d, betas,
                                               d_steps, checks):
    sets = ["lr_g=2e-3", "lr_d=3e-4", "d_steps=2"] if variant == "gan" else []
    cfg = build_config(registry, variant=variant, data=data, steps=1, sets=sets, device="cpu")
    run = Run.build(cfg, registry, load_data=data == RING)
    assert cfg.options["d_steps"] == d_steps
    if run.data:  # one generator update makes d_steps discriminator updates
        run.variant.train_step(run.models, run.loss, run.context(1))
        steps = {net: int(next(iter(run.models.optimizers[net].state.values()))["step"])
                 for net in ("G", "D")}
        assert steps == {"G": 1, "D": d_steps}
    for key, value in checks.items():
        assert cfg.options[key] == value
    for net, lr in (("G", lr_g), ("D", lr_d)):
        opt = run.models.optimizers[net]
        assert type(opt) is opt_cls and opt.param_groups[0]["lr"] == pytest.approx(lr)
        if betas:
            assert opt.param_groups[0]["betas"] == pytest.approx(betas)
