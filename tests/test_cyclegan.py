"""`cyclegan`: pool, schedule and checks in-process; a real two-domain job, resume and translate."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gand_plugins.cyclegan import CycleGAN, ImagePool, lr_factor
from gand_plugins.losses import LeastSquares
from PIL import Image, ImageDraw

from gand import plugins
from gand.api import DataInfo, StepContext, TensorSource
from gand.engine import checkpoint as ckpt
from gand.engine import options as engine_options
from gand.errors import UsageError
from gand.jobspec import build_config
from support import wait_succeeded

CPU = torch.device("cpu")
TINY = ["--set", "res_blocks=6", "--set", "ngf=8", "--set", "ndf=8", "--set", "pool_size=8"]

pytestmark = pytest.mark.usefixtures("one_thread")


def make_domains(root: Path) -> tuple[Path, Path]:
    """A: 16 colour images of dark squares; B: 16 grey images of bright circles, 32×32."""
    rng = np.random.RandomState(0)
    a, b = root / "squares", root / "circles"
    a.mkdir()
    b.mkdir()
    for i in range(16):
        im = Image.new("RGB", (32, 32), (200, 200, 190))
        x, y, s = rng.randint(2, 14), rng.randint(2, 14), rng.randint(8, 16)
        ImageDraw.Draw(im).rectangle([x, y, x + s, y + s], fill=tuple(int(c) for c in rng.randint(0, 80, 3)))
        im.save(a / f"sq{i:02d}.png")
        im = Image.new("L", (32, 32), 20)
        x, y, r = rng.randint(8, 24), rng.randint(8, 24), rng.randint(4, 8)
        ImageDraw.Draw(im).ellipse([x - r, y - r, x + r, y + r], fill=int(rng.randint(200, 256)))
        im.save(b / f"ci{i:02d}.png")
    return a, b


def tiny(**overrides):
    v = CycleGAN()
    sets = {"res_blocks": "6", "ngf": "4", "ndf": "4", "pool_size": "4", "batch_size": "2",
            **overrides}
    opts = engine_options.resolve(v, LeastSquares, sets)
    infos = [DataInfo("a", "image", (3, 32, 32), None, 8), DataInfo("b", "image", (1, 32, 32), None, 8)]
    v.check_data(infos, opts)
    models = v.build(infos, opts, CPU)
    sources = [TensorSource(i, torch.rand(8, 3, 32, 32) * 2 - 1, None, CPU) for i in infos]
    return v, opts, models, sources


# -- parts ----------------------------------------------------------------------------------


def test_image_pool_fills_then_swaps_half_the_time():
    random.seed(0)
    images, count = ImagePool.storage(4, (1, 2, 2), CPU)
    pool = ImagePool(images, count)
    first = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 2).clone()
    assert torch.equal(pool.query(first), first) and len(pool) == 3  # filling: returned as given
    second = (torch.arange(3.0) + 10).view(3, 1, 1, 1).expand(3, 1, 2, 2).clone()
    out = pool.query(second)
    assert len(pool) == 4 and out.shape == second.shape
    assert torch.equal(out[0], second[0])  # the fourth slot was free: stored and returned
    returned = [float(v) for v in out[:, 0, 0, 0]]
    stored = [float(v) for v in pool.images[:, 0, 0, 0]]
    # Every output is the new image or the stored one it displaced; nothing is lost or made
    # up: stored + returned = what was stored + the inputs + the one input stored on filling.
    assert sorted(stored + returned) == sorted([0.0, 1.0, 2.0] + [10.0, 11.0, 12.0] + [10.0])
    # Over many queries about half the fakes are swapped for history.
    swaps = 0
    for i in range(200):
        fake = torch.full((1, 1, 2, 2), 100.0 + i)
        swaps += int(pool.query(fake)[0, 0, 0, 0] != 100.0 + i)
    assert 70 < swaps < 130
    empty = ImagePool(*ImagePool.storage(0, (1, 2, 2), CPU))
    assert torch.equal(empty.query(first), first)


def test_lr_is_held_then_falls_linearly_to_zero():
    factors = [lr_factor(s, 10) for s in range(1, 11)]
    assert factors[:5] == [1.0] * 5
    steps = np.diff(factors[4:])
    assert np.allclose(steps, steps[0]) and steps[0] < 0  # equal decrements
    assert 0 < factors[-1] <= 1 / 6 + 1e-9 and lr_factor(11, 10) == 0.0
    # In training: the optimizers' rate at a late step is the schedule's.
    v, opts, models, sources = tiny()
    v.train_step(models, LeastSquares(), StepContext(9, 10, 2, CPU, opts, sources))
    for opt in models.optimizers.values():
        assert opt.param_groups[0]["lr"] == pytest.approx(2e-4 * lr_factor(9, 10))
    assert lr_factor(9, 10) == pytest.approx(2 / 6)


def test_preview_shows_fixed_triplets():
    v, _, models, sources = tiny()
    p1 = v.preview(models, sources, None)
    assert p1.shape == (36, 3, 32, 32)
    assert torch.equal(p1[0], sources[0].x[0]) and torch.equal(p1[3], sources[1].x[0])
    assert torch.allclose(p1[1], v.translate(models, sources[0].x[:1], "a2b")[0], atol=1e-4)
    assert torch.allclose(p1[2], v.translate(models, p1[1:2], "b2a")[0], atol=1e-4)
    assert torch.equal(p1, v.preview(models, sources, None)), "the same images every time"
    with pytest.raises(UsageError, match="gand translate"):
        v.sample(models, 4)


def test_submit_checks(tmp_path):
    reg = plugins.load()
    a, b = make_domains(tmp_path)
    cfg = build_config(reg, variant="cyclegan", data=f"{a},{b}")
    assert cfg.loss == "ls" and cfg.options["lambda_cycle"] == 10
    assert cfg.options["lambda_identity"] == 5 and cfg.options["res_blocks"] == 9
    assert [d.shape for d in cfg.data] == [(3, 32, 32), (3, 32, 32)]  # grey B → colour
    with pytest.raises(UsageError, match="takes 2 dataset"):
        build_config(reg, variant="cyclegan", data=str(a))
    with pytest.raises(UsageError, match="Lipschitz"):
        build_config(reg, variant="cyclegan", data=f"{a},{b}", loss="wasserstein")
    assert build_config(reg, variant="cyclegan", data=f"{a},{b}", loss="hinge").loss == "hinge"
    with pytest.raises(UsageError, match="image_size=30"):
        build_config(reg, variant="cyclegan", data=f"{a},{b}", sets=["image_size=30"])
    with pytest.raises(UsageError, match="d_steps=5: variant cyclegan does not use"):
        build_config(reg, variant="cyclegan", data=f"{a},{b}", sets=["d_steps=5"])
    with pytest.raises(UsageError, match="res_blocks=7"):
        build_config(reg, variant="cyclegan", data=f"{a},{b}", sets=["res_blocks=7"])
    v = CycleGAN()
    opts = engine_options.resolve(v, LeastSquares, {})
    v.check_data([DataInfo("a", "image", (1, 30, 30)), DataInfo("b", "image", (1, 64, 64))], opts)
    assert v.data_shape(DataInfo("b", "image", (1, 64, 64)), opts) == (1, 32, 32)


def test_the_lectures_networks_on_request(tmp_path):
    """--set res_padding=zeros --set patch=94: the lecture's sketch (zero-padded residual
    blocks, a PatchGAN strided four times), which the speed benchmark compares with."""
    v, opts, models, sources = tiny()
    assert opts["res_padding"] == "reflect" and opts["patch"] == 70
    pads = [m for m in models.nets["G_ab"].modules() if isinstance(m, torch.nn.ReflectionPad2d)]
    assert len(pads) == 2 + 2 * 6  # around the 7×7 convolutions, and twice in each block
    x = torch.rand(1, 3, 256, 256)
    assert models.nets["D_a"](x).shape[-2:] == (30, 30)  # 70 px patches
    v, opts, lecture, _ = tiny(res_padding="zeros", patch="94")
    pads = [m for m in lecture.nets["G_ab"].modules() if isinstance(m, torch.nn.ReflectionPad2d)]
    assert len(pads) == 2
    assert lecture.nets["D_a"](x).shape[-2:] == (15, 15)  # 94 px patches, a quarter as many
    def weights(m):
        return sum(p.numel() for net in m.nets.values() for p in net.parameters())
    assert weights(lecture) == weights(models)  # the same weights, arranged otherwise
    for _ in range(2):  # and it trains
        losses = v.train_step(lecture, LeastSquares(opts), StepContext(
            step=1, total_steps=4, batch_size=2, device=CPU, options=opts, data=sources))
        assert all(torch.isfinite(t).all() for t in losses.values())
    reg = plugins.load()
    a, b = make_domains(tmp_path)
    with pytest.raises(UsageError, match=r"image_size=28 is invalid; expected a multiple of 4 "
                                         r"of at least 32 with patch=94$"):
        build_config(reg, variant="cyclegan", data=f"{a},{b}", sets=["patch=94", "image_size=28"])
    with pytest.raises(UsageError, match="res_padding"):
        build_config(reg, variant="cyclegan", data=f"{a},{b}", sets=["res_padding=circular"])


# -- a real job -----------------------------------------------------------------------------


def run_all(g, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Runs several `gand` commands side by side (each start-up costs seconds of imports)."""
    procs = [subprocess.Popen([sys.executable, "-m", "gand", *c], env=g.env, cwd=g.home, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    out = []
    for c, p in zip(commands, procs):
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


def one_line_error(p: subprocess.CompletedProcess, text: str) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(lines) == 1 and text in lines[0], (p.args, p.stderr)


def test_cyclegan_job_trains_resumes_and_translates(gand, tmp_path):
    from gand.store import Store

    a, b = make_domains(tmp_path)
    job_id = gand.submit("cyclegan", "--data", f"{a},{b}", "--steps", "3", "--batch-size", "2",
                         "--checkpoint-every", "3", "--seed", "3", *TINY)
    store = Store(f"sqlite:///{gand.home / 'gand.db'}")
    # Another variant's job, recorded but never run: translate must refuse it.
    other_id = store.create_job(variant="gan", loss="bce", data=["ring8"], total_steps=10,
                                config=build_config(plugins.load(), variant="gan", data="ring8").to_dict(),
                                queue="elsewhere").id
    gand.worker(burst=False)  # one worker for the job and its resume
    wait_succeeded(gand, store, job_id, 3)
    grids = [gand.home / x.path for x in store.artifacts(job_id) if x.kind == "samples"]
    assert grids and Image.open(grids[-1]).size == (6 * 32 + 7 * 2,) * 2  # 6 rows of 2 triplets
    lr = {m.step: m.value for m in store.metrics(job_id, "lr")}
    assert lr == pytest.approx({1: 2e-4, 2: 2e-4 * 2 / 3, 3: 2e-4 / 3})

    gand.run("resume", job_id, "--steps", "4")
    wait_succeeded(gand, store, job_id, 4)
    cps = {c.step: c for c in store.checkpoints(job_id)}
    assert sorted(cps) == [3, 4]
    assert sorted(m.step for m in store.metrics(job_id, "g_loss")) == [1, 2, 3, 4]
    # The schedule follows the new total: held to step 2 of 4, then falling.
    assert store.metrics(job_id, "lr")[-1].value == pytest.approx(2e-4 / 3)

    # The pool went on from the saved one: 6 fakes after 3 steps of 2, then 2 more (a fresh
    # pool would hold 2), the first 6 untouched while it was not yet full.
    s3 = ckpt.load(gand.home / cps[3].path, cps[3].sha256)["models"]["extras"]
    s4 = ckpt.load(gand.home / cps[4].path, cps[4].sha256)["models"]["extras"]
    for d in ("a", "b"):
        assert int(s3[f"pool_{d}_n"]) == 6 and int(s4[f"pool_{d}_n"]) == 8
        assert torch.equal(s4[f"pool_{d}"][:6], s3[f"pool_{d}"][:6])
        assert s4[f"pool_{d}"][6:].abs().sum() > 0

    out, empty = gand.home / "translated", tmp_path / "empty"
    empty.mkdir()
    ok, *errors = run_all(
        gand,
        ["translate", job_id[:10], "--input", str(a), "--out", str(out), "--json"],
        ["translate", job_id, "--input", str(a), "--out", str(out), "--direction", "sideways"],
        ["translate", job_id, "--input", str(empty), "--out", str(out)],
        ["translate", other_id, "--input", str(a), "--out", str(out)],
        ["generate", job_id, "--out", str(tmp_path / "x.png"), "--truncation", "0.7"])
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["step"] == 4 and report["n"] == 16 and report["direction"] == "a2b"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in a.iterdir())
    for name in names:
        im = Image.open(out / name)
        assert im.size == (32, 32) and im.mode == "RGB"
    one_line_error(errors[0], "--direction 'sideways' is invalid; expected a2b or b2a")
    one_line_error(errors[1], "has no readable images")
    one_line_error(errors[2], "is a gan job; gand translate needs a two-domain")
    one_line_error(errors[3], "--truncation 0.7: variant cyclegan has no truncation trick")
    store.close()
