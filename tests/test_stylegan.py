"""`stylegan`: its parts in-process, and a real job through a worker (train, resume, truncate, mix)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support import MNIST, wait_succeeded
from gand_plugins.losses import NonSaturatingBCE
from gand_plugins.stylegan import (
    AdaIN,
    MappingNetwork,
    StyleGAN,
    normalize_latent,
    truncate,
)
from PIL import Image

from gand import plugins
from gand.api import DataInfo, StepContext, TensorSource
from gand.engine import checkpoint as ckpt
from gand.engine import options as engine_options
from gand.engine import samples
from gand.engine.trainer import Hooks, Run, train
from gand.errors import UsageError
from gand.jobspec import build_config

CPU = torch.device("cpu")
TINY = {"z_dim": "16", "w_dim": "16", "channels": "16", "ndf": "8", "mapping_layers": "3"}
TINY_SETS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_models(**overrides):
    v = StyleGAN()
    opts = engine_options.resolve(v, NonSaturatingBCE, {**TINY, "batch_size": "4", **overrides})
    info = DataInfo("test", "image", (1, 28, 28), None, 64)
    models = v.build([info], opts, CPU)
    source = TensorSource(info, torch.rand(64, 1, 32, 32) * 2 - 1, None, CPU)
    return v, opts, models, source


# -- parts ----------------------------------------------------------------------------------


def test_adain_output_has_the_styles_channel_mean_and_std():
    torch.manual_seed(0)
    adain = AdaIN(channels=6, w_dim=10)
    x = torch.randn(4, 6, 8, 8) * 3 + 5  # far from zero mean and unit std
    w = torch.randn(4, 10)
    out = adain(x, w)
    scale, bias = adain.scale_bias(w)
    assert torch.allclose(out.mean(dim=(2, 3)), bias, atol=1e-4)
    assert torch.allclose(out.std(dim=(2, 3), unbiased=False), scale.abs(), atol=1e-3)
    # A fresh AdaIN scales by about 1: the style starts as a pass-through.
    assert (scale - 1).abs().mean() < 0.5 and scale.mean().sub(1).abs() < 0.2


def test_mapping_normalises_z():
    torch.manual_seed(0)
    z = torch.randn(5, 32) * torch.tensor([[0.1], [1], [10], [100], [3]])
    zn = normalize_latent(z)
    assert torch.allclose(zn.pow(2).mean(1), torch.ones(5), atol=1e-5)
    mapping = MappingNetwork(32, 24, layers=8)
    w = mapping(z)
    assert w.shape == (5, 24)
    # The scale of z does not matter, only its direction.
    assert torch.allclose(mapping(z * 7), w, atol=1e-5)
    # He initialisation keeps w's scale through 8 layers (torch's default would shrink it ~1000×).
    assert 0.05 < w.std().item() < 20


def test_sizes_from_the_data():
    v = StyleGAN()
    opts = engine_options.resolve(v, NonSaturatingBCE, {})
    assert opts["z_dim"] == opts["w_dim"] == 512 and opts["mapping_layers"] == 8  # the lecture's
    shape = lambda h: v.data_shape(DataInfo("x", "image", (3, h, h)), opts)
    assert [shape(h) for h in (8, 28, 32, 50, 64, 100, 300)] == \
        [(3, 8, 8), (3, 32, 32), (3, 32, 32), (3, 64, 64), (3, 64, 64), (3, 128, 128), (3, 128, 128)]


def test_training_mixes_styles_and_tracks_w_avg():
    torch.manual_seed(1)
    v, opts, models, source = tiny_models(mixing_prob="1")
    seen: list[torch.Tensor] = []
    hooks = [layer.adain.style.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
             for layer in models.G.synthesis.layers]
    ctx = StepContext(1, 10, 4, CPU, opts, [source])
    v.train_step(models, NonSaturatingBCE(), ctx)
    for h in hooks:
        h.remove()
    L = models.G.synthesis.num_ws
    g_step = seen[-L:]  # the generator update's styles, one per layer, coarse first
    changes = [i for i in range(1, L) if not torch.equal(g_step[i], g_step[i - 1])]
    assert len(changes) == 1, "exactly one crossover between two latents' styles"
    assert models.extras["w_avg"].abs().sum() > 0, "w_avg moves during training"

    v2, opts2, models2, source2 = tiny_models(mixing_prob="0")
    seen.clear()
    for layer in models2.G.synthesis.layers:
        layer.adain.style.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    v2.train_step(models2, NonSaturatingBCE(), StepContext(1, 10, 4, CPU, opts2, [source2]))
    assert all(torch.equal(s, seen[-1]) for s in seen[-L:]), "no mixing: one w for all layers"


def test_truncation_pulls_toward_w_avg():
    torch.manual_seed(2)
    v, opts, models, source = tiny_models()
    for step in range(1, 4):
        v.train_step(models, NonSaturatingBCE(), StepContext(step, 10, 4, CPU, opts, [source]))
    w_avg = models.extras["w_avg"]
    w = torch.randn(3, w_avg.shape[0])
    assert torch.allclose(truncate(w, w_avg, 0.0), w_avg.expand(3, -1))
    assert torch.allclose(truncate(w, w_avg, 1.0), w)
    g = lambda: torch.Generator().manual_seed(9)
    same = v.sample(models, 6, generator=g(), truncation=0.0, noise=False)
    assert same.shape == (6, 1, 32, 32)
    assert (same - same[0]).abs().max() < 1e-5, "psi=0: every image is the mean style's"
    varied = v.sample(models, 6, generator=g(), noise=False)
    assert (varied - varied[0]).abs().max() > 1e-3
    half = v.sample(models, 6, generator=g(), truncation=0.5, noise=False)
    assert (half - half.mean(0)).abs().mean() < (varied - varied.mean(0)).abs().mean()


def test_style_mixing_grid_layout():
    torch.manual_seed(3)
    v, _, models, _ = tiny_models()
    grid = v.style_mixing_grid(models, 3, 4, generator=torch.Generator().manual_seed(0))
    assert grid.shape == (4 * 5, 1, 32, 32)
    assert torch.equal(grid[0], torch.ones(1, 32, 32)), "blank corner"
    rows, cols = grid[5::5], grid[1:5]
    mixed = grid.view(4, 5, 1, 32, 32)[1:, 1:]
    # Each mixed image sits between its sources: closer to them than to other rows' sources.
    assert not torch.allclose(mixed[0, 0], mixed[0, 1]) and not torch.allclose(mixed[0, 0], rows[0])
    assert rows.shape[0] == 3 and cols.shape[0] == 4
    with pytest.raises(UsageError, match="crossover 99 is invalid"):
        v.style_mixing_grid(models, 2, 2, crossover=99)


def test_submit_checks():
    reg = plugins.load()
    cfg = build_config(reg, variant="stylegan", data=f"mnist:{MNIST}", sets=["z_dim=32"])
    assert cfg.loss == "bce+r1" and cfg.data[0].shape == (1, 32, 32)
    assert cfg.options["r1_gamma"] == 10 and cfg.options["d_norm"] == "none"
    with pytest.raises(UsageError, match="BatchNorm"):
        build_config(reg, variant="stylegan", data=f"mnist:{MNIST}", sets=["d_norm=batch"])
    with pytest.raises(UsageError, match="stylegan takes image data"):
        build_config(reg, variant="stylegan", data="ring8")
    with pytest.raises(UsageError, match="mixing_prob=2"):
        build_config(reg, variant="stylegan", data=f"mnist:{MNIST}", sets=["mixing_prob=2"])


# -- a real job -----------------------------------------------------------------------------


def test_stylegan_job_trains_resumes_and_generates(gand, tmp_path):
    from gand.store import Store

    store = Store(f"sqlite:///{gand.home / 'gand.db'}")
    job_id = gand.submit("stylegan", "--data", f"mnist:{MNIST}", "--steps", "4", "--batch-size", "8",
                         "--checkpoint-every", "2", "--seed", "5", *TINY_SETS)
    gand.worker(burst=False)  # one worker for the job and its resume
    wait_succeeded(gand, store, job_id, 4)
    assert [c.step for c in store.checkpoints(job_id)] == [2, 4]
    grids = [gand.home / a.path for a in store.artifacts(job_id) if a.kind == "samples"]
    assert grids and Image.open(grids[-1]).size == (8 * 32 + 9 * 2,) * 2

    gand.run("resume", job_id, "--steps", "6")
    wait_succeeded(gand, store, job_id, 6)
    cps = {c.step: c for c in store.checkpoints(job_id)}
    assert sorted(cps) == [2, 4, 6]
    g_steps = [m.step for m in store.metrics(job_id, "g_loss")]
    assert sorted(g_steps) == [1, 2, 3, 4, 5, 6], "the resumed run started at step 5"

    # w_avg is in the checkpoint, moved from its zero start, and restored exactly.
    s4 = ckpt.load(gand.home / cps[4].path, cps[4].sha256)
    s6 = ckpt.load(gand.home / cps[6].path, cps[6].sha256)
    w4, w6 = s4["models"]["extras"]["w_avg"], s6["models"]["extras"]["w_avg"]
    assert w4.abs().sum() > 0 and not torch.equal(w4, w6)
    config = json.loads(s4["config"])
    run = Run.build(config, plugins.load(), device="cpu")
    assert run.models.extras["w_avg"].abs().sum() == 0
    assert run.restore(s4) == 4 and torch.equal(run.models.extras["w_avg"], w4)
    # Continuing in-process from step 4 reproduces the worker's resumed steps, so the worker
    # went on from the saved w_avg (a fresh one would differ by far more than rounding).
    run.config = run.config.with_steps(6)
    out = train(run, tmp_path / "replay", Hooks(), start_step=4)
    assert out.step == 6
    assert torch.allclose(run.models.extras["w_avg"], w6, atol=1e-4), \
        (run.models.extras["w_avg"] - w6).abs().max()

    # The style-mixing figure: 3 rows × 4 columns plus headers, at the data's 32 px.
    grid = run.variant.style_mixing_grid(run.models, 3, 4, generator=torch.Generator().manual_seed(0))
    path = samples.save_grid(grid, tmp_path / "mix.png", nrow=5)
    assert Image.open(path).size == (5 * 32 + 6 * 2, 4 * 32 + 5 * 2)

    # Truncation through the CLI: a grid whose 16 images all show the mean style at psi 0.
    png = gand.home / "trunc.png"
    gand.run("generate", job_id, "--n", "16", "--out", str(png), "--truncation", "0", "--seed", "1")
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    assert pixels.shape == (4 * 32 + 5 * 2,) * 2
    cells = np.stack([pixels[2 + 34 * r:34 + 34 * r, 2 + 34 * c:34 + 34 * c]
                      for r in range(4) for c in range(4)])
    psi0 = float(np.abs(cells - cells[0]).max())
    g = lambda: torch.Generator().manual_seed(1)
    untruncated = run.variant.sample(run.models, 16, generator=g())
    psi1 = float((untruncated - untruncated[0]).abs().max()) * 127.5  # in 0..255 pixel units
    # At psi 0 only the (barely trained) noise inputs still vary; at psi 1 the styles do.
    assert psi0 <= 8 and psi1 > 4 * max(psi0, 1), (psi0, psi1)
    psi07 = run.variant.sample(run.models, 16, generator=g(), truncation=0.7)
    assert psi07.shape == (16, 1, 32, 32) and not torch.allclose(psi07, untruncated)
    store.close()
