"""The zoo variants through a real worker: each trains with its default loss, checkpoints,
resumes at the right step and generates; plus ADA, EMA and `generate --label`.

The many CLI calls run the real `gand` entry point in this process (`cli` below: the same code
as the console script, the process environment pointed at the test's GAND_HOME) because each
subprocess costs seconds of torch import on two shared cores; the training runs in real
`gand worker --burst` subprocesses over the embedded broker and SQLite store.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support import MNIST
from PIL import Image

from gand import plugins
from gand.api import DatasetType
from gand.engine import augment
from gand.engine.trainer import Run
from gand.jobspec import build_config

DIGITS = f"mnist:{MNIST}"
SMALL = ["--batch-size", "8", "--set", "ngf=8", "--set", "ndf=8"]
# variant, data, extra submit args: each with its default loss.
JOBS = [
    ("cgan", DIGITS, SMALL),
    ("wgan", "ring8", ["--batch-size", "16", "--set", "hidden=16"]),
    ("wgan-gp", DIGITS, SMALL),
    ("lsgan", "ring8", ["--batch-size", "16", "--set", "hidden=16"]),
    ("sagan", DIGITS, SMALL),
    ("began", DIGITS, SMALL + ["--set", "n_hidden=8"]),
    ("dcgan", DIGITS, SMALL + ["--set", "ada=true", "--set", "ada_kimg=0.1"]),
]
DEFAULT_LOSS = {"cgan": "bce", "wgan": "wasserstein+clip", "wgan-gp": "wgan-gp", "lsgan": "ls",
                "sagan": "hinge", "began": "began", "dcgan": "bce"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cli(gand_inprocess):
    """`gand ARGS…` in this process (conftest's gand_inprocess); check=True asserts exit 0."""

    def run(*args: str, check: bool = True) -> tuple[int, str, str]:
        rc, out, err = gand_inprocess(*args)
        if check and rc != 0:
            raise AssertionError(f"gand {' '.join(args)} exited {rc}: {err}")
        return rc, out, err

    run.json = gand_inprocess.json
    return run


def test_every_variant_trains_checkpoints_resumes_and_generates(gand, cli):
    ids = {}
    for variant, data, extra in JOBS:
        ids[variant] = cli.json("submit", variant, "--data", data, "--steps", "4", "--seed", "5",
                                "--device", "cpu", "--checkpoint-every", "2", "--sample-every", "4",
                                *extra)["id"]
    assert gand.worker().wait(timeout=300) == 0, gand.worker_log()

    for variant, job_id in ids.items():
        job = cli.json("show", job_id)
        assert job["status"] == "succeeded", (variant, job)
        assert job["loss"] == DEFAULT_LOSS[variant]
        assert [c["step"] for c in job["checkpoints"]] == [2, 4], variant
        resumed = cli.json("resume", job_id, "--steps", "6")
        assert resumed["from_step"] == 4 and resumed["total_steps"] == 6
    assert gand.worker().wait(timeout=300) == 0, gand.worker_log()

    for variant, job_id in ids.items():
        job = cli.json("show", job_id)
        assert job["status"] == "succeeded" and job["step"] == 6, (variant, job)
        rows = cli.json("metrics", job_id)
        g_steps = sorted(r["step"] for r in rows if r["key"] == "g_loss")
        # Every step once: the second run began at step 5, right after the checkpoint at 4.
        assert g_steps == [1, 2, 3, 4, 5, 6], (variant, g_steps)
        if variant in ("wgan", "lsgan"):  # ring8: vectors, written as .npy
            out = gand.home / f"{variant}.npy"
            cli("generate", job_id, "--n", "5", "--out", str(out))
            assert np.load(out).shape == (5, 2) and np.isfinite(np.load(out)).all()
        else:
            out = gand.home / f"{variant}.png"
            label = ["--label", "3"] if variant == "cgan" else []
            cli("generate", job_id, "--n", "4", "--out", str(out), *label)
            assert Image.open(out).size == (2 * 28 + 3 * 2,) * 2, variant

    by_key = {}
    for r in cli.json("metrics", ids["began"]):
        by_key.setdefault(r["key"], {})[r["step"]] = r["value"]
    assert {"k", "M", "l_real"} <= set(by_key) and set(by_key["k"]) == set(range(1, 7))
    ada = {r["step"]: r["value"] for r in cli.json("metrics", ids["dcgan"]) if r["key"] == "ada_p"}
    # p moves only every 4 steps, so step 5 shows exactly the p saved in the step-4 checkpoint.
    assert set(ada) == set(range(1, 7)) and ada[5] == ada[4] and ada[1] == 0.0

    # generate --label: only for conditional variants, only a trained class.
    rc, _, err = cli("generate", ids["cgan"], "--label", "10", "--out", "x.png", check=False)
    assert rc != 0 and "--label 10 is invalid; expected 0 to 9" in err and "\n" not in err.strip()
    rc, _, err = cli("generate", ids["sagan"], "--label", "1", "--out", "x.png", check=False)
    assert rc != 0 and "variant sagan is not conditional" in err


def test_refusals_are_one_line_from_the_real_cli(gand):
    p = gand.run("submit", "wgan", "--data", "ring8", "--loss", "bce", check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0
    assert "loss bce needs a discriminator that outputs logits; variant wgan outputs critic" in p.stderr


# ---------------------------------------------------------------------------------------------
# In-process: what the worker test cannot see from outside.


def test_cgan_label_selects_the_class_given_to_g(registry):
    cfg = build_config(registry, variant="cgan", data=DIGITS, steps=1, sets=["ngf=8", "ndf=8"],
                       seed=2, device="cpu")
    run = Run.build(cfg, registry, load_data=False)
    g = lambda: torch.Generator().manual_seed(7)
    three, also_three = (run.variant.sample(run.models, 6, generator=g(), label=3) for _ in range(2))
    seven = run.variant.sample(run.models, 6, generator=g(), label=7)
    assert torch.equal(three, also_three) and not torch.allclose(three, seven)
    G = run.models.G
    z = torch.randn(6, run.models.extras["nz"], generator=g())
    with torch.no_grad():
        G.eval()
        assert torch.allclose(three, G(z, torch.full((6,), 3)))


def test_generate_uses_the_ema_generator(registry):
    cfg = build_config(registry, variant="gan", data="ring8", steps=5, sets=["ema=0.5", "hidden=16"],
                       seed=3, device="cpu")
    run = Run.build(cfg, registry)
    for step in range(1, 6):
        run.variant.train_step(run.models, run.loss, run.context(step))
    G, G_ema = run.models.G, run.models.nets["G_ema"]
    z = torch.randn(10, run.models.extras["nz"], generator=torch.Generator().manual_seed(1))
    x = run.variant.sample(run.models, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(x, G_ema(z)) and not torch.allclose(x, G(z))


def test_ada_augments_differentiably_and_steers_p():
    x = (torch.rand(16, 3, 32, 32) * 2 - 1).requires_grad_(True)
    assert torch.equal(augment.augment(x, 0.0), x)
    y = augment.augment(x, 1.0)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.square().sum().backward()  # G is trained through the augmentations
    assert x.grad is not None and x.grad.abs().sum() > 0
    opts = {"ada_target": 0.6, "ada_kimg": 1.0}
    step = 64 * augment.ADA_INTERVAL / 1000
    assert augment.adjust(0.5, torch.ones(64), opts, 64) == pytest.approx(0.5 + step)  # overfits
    assert augment.adjust(0.5, -torch.ones(64), opts, 64) == pytest.approx(0.5 - step)
    assert augment.adjust(0.0, -torch.ones(64), opts, 64) == 0.0  # clamped to [0, 1]
    assert augment.adjust(0.99, torch.ones(64), opts, 64) == 1.0


def test_ada_p_and_began_k_survive_a_checkpoint(registry):
    """ADA's p is a variant extra; BEGAN's k is its loss's state (the documented state hook)."""
    cfg = build_config(registry, variant="dcgan", data=DIGITS, steps=2,
                       sets=["ada=true", "ngf=8", "ndf=8"], seed=4, device="cpu")
    first = Run.build(cfg, registry, load_data=False)
    first.models.extras["ada_p"] = 0.37
    state = first.state(2)
    second = Run.build(cfg, registry, load_data=False)
    assert float(second.models.extras["ada_p"]) == 0.0
    assert second.restore(state) == 2
    assert float(second.models.extras["ada_p"]) == pytest.approx(0.37)

    cfg = build_config(registry, variant="began", data=DIGITS, steps=2, sets=["ngf=8", "ndf=8"],
                       seed=4, device="cpu")
    first = Run.build(cfg, registry, load_data=False)
    first.loss.load_state_dict({"k": torch.tensor(0.37)})
    state = first.state(2)
    assert float(state["loss"]["k"]) == pytest.approx(0.37)
    second = Run.build(cfg, registry, load_data=False)
    assert float(second.loss.state_dict()["k"]) == 0.0
    assert second.restore(state) == 2
    assert float(second.loss.state_dict()["k"]) == pytest.approx(0.37)


class LabelledRing(DatasetType):
    """ring8 with each point's mode as its label: labelled vector data, for cgan's MLP path."""

    name = "labelled-ring"
    help = "ring8 with the mode as label"
    needs_arg = False

    def describe(self, arg):
        from gand.api import DatasetType, DataInfo

        return DataInfo(spec=self.name, kind="vector", shape=(2,), num_classes=8)

    def load(self, arg, info, shape, device):
        from gand.api import FunctionSource

        def draw(n, dev):
            y = torch.randint(0, 8, (n,), device=dev)
            angle = y.float() * (2 * math.pi / 8)
            return torch.stack([angle.cos(), angle.sin()], 1) + 0.01 * torch.randn(n, 2, device=dev), y

        return FunctionSource(info, draw, device)


def test_cgan_on_labelled_vectors_uses_the_mlp_networks():
    from types import SimpleNamespace

    from gand.hookspecs import hookimpl

    # An inline plugin in a fresh manager, registering the dataset through the hook.
    plugin = SimpleNamespace(__name__="labelled_ring_plugin",
                             gand_register_datasets=hookimpl(lambda: [LabelledRing]))
    registry = plugins.load(extra=(plugin,))
    cfg = build_config(registry, variant="cgan", data="labelled-ring", steps=3, seed=1, device="cpu",
                       sets=["hidden=16"])
    run = Run.build(cfg, registry)
    for step in (1, 2, 3):
        report = run.variant.train_step(run.models, run.loss, run.context(step))
        assert torch.isfinite(report["d_loss"]) and torch.isfinite(report["g_loss"])
    x = run.variant.sample(run.models, 5, label=4)
    assert x.shape == (5, 2)
    assert type(run.models.D.body).__name__ == "MLPDiscriminator"
