"""The fast paths (gand/engine/fastpath.py): what `auto` becomes, that explicit values are obeyed
and recorded, and that bf16, channels_last and torch.compile train the same model on the CPU."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from gand.engine import fastpath
from gand.engine.trainer import Hooks, Run, train
from gand.jobspec import build_config
from support import MNIST

SMALL_DCGAN = ["ngf=8", "ndf=8"]


def build(registry, variant: str, data: str, sets: list[str], steps: int = 4, bs: int = 8,
          device: str = "cpu") -> Run:
    cfg = build_config(registry, variant=variant, data=data, steps=steps, batch_size=bs,
                       sets=sets, seed=3, device=device, checkpoint_every=2, sample_every=0)
    return Run.build(cfg, registry)


def losses_of(run: Run, tmp_path, start: int = 0) -> tuple[list[tuple[int, str, float]], list[dict]]:
    rows, states = [], []
    hooks = Hooks(report=lambda r, step: rows.extend(r),
                  # A copy, as the worker's file is: the state holds the live tensors.
                  checkpoint=lambda step, state: states.append(copy.deepcopy(state)))
    train(run, tmp_path, hooks, start_step=start)
    return [r for r in rows if r[1] in ("d_loss", "g_loss")], states


def test_auto_on_the_cpu_is_plain_and_explicit_values_are_obeyed(registry):
    auto = build(registry, "dcgan", f"mnist:{MNIST}", SMALL_DCGAN).runtime
    assert (auto.precision, auto.channels_last, auto.compile, auto.optim_impl) == \
        ("fp32", False, False, "default")
    given = build(registry, "dcgan", f"mnist:{MNIST}",
                  SMALL_DCGAN + ["precision=bf16", "channels_last=true", "optim_impl=foreach"])
    rt = given.runtime
    assert (rt.precision, rt.channels_last, rt.optim_impl) == ("bf16", True, "foreach")
    assert "precision given" in rt.why and "channels_last given" in rt.why
    # What was chosen is what runs: the context's autocast, the layout, the optimizer kernels.
    assert given.context(1).precision == "bf16"
    conv = next(m for m in given.models.D.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert given.data[0].sample(4).x.is_contiguous(memory_format=torch.channels_last)
    assert all(g["foreach"] for g in given.models.optimizers["G"].param_groups)


def test_the_rules_for_a_gpu_follow_the_work_per_step(registry):
    """The choice a CUDA worker would make, decided from the models and the loss alone: large
    convolutional steps get bf16 + channels_last, small ones and MLPs stay fp32, and compile is
    never chosen with a gradient penalty (double backward)."""
    cuda = torch.device("cuda")

    def choose(variant, data, sets, bs, loss=None):
        cfg = build_config(registry, variant=variant, data=data, loss=loss, steps=1,
                           batch_size=bs, sets=sets, device="cpu")
        run = Run.build(cfg, registry)
        return fastpath.choose(cfg.options, cuda, run.models, run.loss, run.data)

    small = choose("dcgan", f"mnist:{MNIST}", [], 64)
    assert (small.precision, small.channels_last, small.compile, small.optim_impl) == \
        ("fp32", False, False, "fused")
    big = choose("dcgan", f"mnist:{MNIST}", [], 16384)
    assert (big.precision, big.channels_last) == ("bf16", True)
    mlp = choose("gan", "ring8", [], 100_000)
    assert (mlp.precision, mlp.compile) == ("fp32", False)
    gp = choose("wgan-gp", f"mnist:{MNIST}", [], 100_000)
    assert gp.precision == "bf16" and not gp.compile
    assert fastpath.needs_double_backward(Run.build(build_config(
        registry, variant="wgan-gp", data=f"mnist:{MNIST}", steps=1, device="cpu"), registry).loss)


@pytest.mark.parametrize("native", [True, False])
def test_a_cpu_with_native_bf16_runs_large_convolutional_steps_in_bf16(registry, monkeypatch,
                                                                        native):
    """bf16 + channels_last on a CPU with bf16 matrix instructions (AMX, AVX512-BF16), for
    convolutional steps of at least CPU_BF16_FLOPS; MLPs and tiny networks stay fp32, and so
    does everything on a CPU without them (there bf16 is emulated, and slower)."""
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")

    def choose(variant, data, sets, bs):
        cfg = build_config(registry, variant=variant, data=data, steps=1, batch_size=bs,
                           sets=sets, device="cpu")
        run = Run.build(cfg, registry)
        return fastpath.choose(cfg.options, cpu, run.models, run.loss, run.data)

    dcgan = choose("dcgan", f"mnist:{MNIST}", [], 64)  # 1.8 GFLOP forward
    assert (dcgan.precision, dcgan.channels_last) == (("bf16", True) if native else ("fp32", False))
    assert ("CPU with native bf16" in dcgan.why) == native
    tiny = choose("dcgan", f"mnist:{MNIST}", SMALL_DCGAN, 8)  # 0.01 GFLOP
    mlp = choose("gan", "ring8", [], 100_000)
    for rt in (tiny, mlp):
        assert (rt.precision, rt.channels_last, rt.compile, rt.optim_impl) == \
            ("fp32", False, False, "default")
    given = choose("dcgan", f"mnist:{MNIST}", ["precision=fp32"], 64)
    assert given.precision == "fp32" and "precision given" in given.why
    # channels_last, but not for networks of InstanceNorm-ed convolutions (CycleGAN's).
    cyclegan = choose("cyclegan", f"mnist:{MNIST},mnist:{MNIST}", [], 1)
    assert (cyclegan.precision, cyclegan.channels_last) == (("bf16", False) if native
                                                            else ("fp32", False))
    assert ("InstanceNorm after most convolutions" in cyclegan.why) == native
    in_d = choose("dcgan", f"mnist:{MNIST}", ["d_norm=instance"], 64)
    assert in_d.channels_last == native
    asked = choose("cyclegan", f"mnist:{MNIST},mnist:{MNIST}", ["channels_last=true"], 1)
    assert asked.channels_last


def test_the_work_estimate_never_fails_a_job(registry):
    """step_flops decides the GPU's fast paths at Run.build: for every installed variant it
    returns a number (StyleGAN's synthesis once crashed torch's FLOP counter, which would have
    failed every StyleGAN job on CUDA)."""
    for name in sorted(registry.variants):
        v = registry.variant(name)
        data = f"mnist:{MNIST},mnist:{MNIST}" if name == "cyclegan" else f"mnist:{MNIST}"
        try:
            cfg = build_config(registry, variant=name, data=data, steps=1, batch_size=4,
                               device="cpu")
        except Exception:  # a third-party variant that does not take MNIST: not this test's
            continue
        run = Run.build(cfg, registry)
        assert fastpath.step_flops(run.models, run.data, 4) >= 0, v.name


def test_bf16_and_channels_last_train_and_resume_on_cpu(registry, tmp_path):
    """A checkpoint written on the bf16 + channels_last path resumes to the same losses as the
    run that went straight through."""
    sets = SMALL_DCGAN + ["precision=bf16", "channels_last=true"]
    straight, states = losses_of(build(registry, "dcgan", f"mnist:{MNIST}", sets), tmp_path / "a")
    assert all(torch.isfinite(torch.tensor(v)) for _, _, v in straight)
    mid = next(s for s in states if s["step"] == 2)
    resumed = build(registry, "dcgan", f"mnist:{MNIST}", sets)
    start = resumed.restore(mid)
    assert start == 2
    after, _ = losses_of(resumed, tmp_path / "b", start)
    tail = [r for r in straight if r[0] > 2]
    assert [(s, k) for s, k, _ in after] == [(s, k) for s, k, _ in tail]
    assert torch.allclose(torch.tensor([v for *_, v in after]), torch.tensor([v for *_, v in tail]),
                          rtol=1e-4, atol=1e-5)


def test_a_checkpoint_moves_between_fast_paths(registry, tmp_path):
    """State dict keys and shapes do not depend on the fast path: a channels_last/foreach
    checkpoint loads into a plain run (as when a job moves from a GPU worker to a CPU one)."""
    _, states = losses_of(build(registry, "dcgan", f"mnist:{MNIST}",
                                SMALL_DCGAN + ["channels_last=true", "optim_impl=foreach"]), tmp_path)
    plain = build(registry, "dcgan", f"mnist:{MNIST}", SMALL_DCGAN, steps=6)
    assert plain.restore(states[-1]) == 4
    after, _ = losses_of(plain, tmp_path / "p", start=4)
    assert [s for s, k, _ in after if k == "g_loss"] == [5, 6]


def test_compile_gives_the_eager_loss_trajectory(registry, tmp_path):
    """torch.compile (inductor, on the CPU here) computes the same step: a few steps from the
    same seed give the same losses within float tolerance."""
    sets = ["hidden=32", "nz=4"]
    eager, _ = losses_of(build(registry, "gan", "ring8", sets + ["compile=false"], steps=5, bs=64),
                         tmp_path / "e")
    compiled_run = build(registry, "gan", "ring8", sets + ["compile=true"], steps=5, bs=64)
    assert compiled_run.runtime.compile
    compiled, _ = losses_of(compiled_run, tmp_path / "c")
    assert [(s, k) for s, k, _ in compiled] == [(s, k) for s, k, _ in eager]
    assert torch.allclose(torch.tensor([v for *_, v in compiled]), torch.tensor([v for *_, v in eager]),
                          rtol=1e-3, atol=1e-4)
    # The compiled networks still save under their own names: checkpoints are interchangeable.
    assert set(compiled_run.models.G.state_dict()) == set(build(registry, "gan", "ring8", sets).models.G.state_dict())


def test_a_job_records_what_ran_and_show_prints_it(gand):
    job = gand.submit("gan", "--data", "ring8", "--steps", "20", "--set", "optim_impl=foreach")
    gand.worker().wait(timeout=240)
    shown = gand.wait_job(job, {"succeeded"})
    rt = shown["config"]["runtime"]
    assert rt["device"] == "cpu" and rt["precision"] == "fp32" and rt["optim_impl"] == "foreach"
    assert "optim_impl given" in rt["why"]
    assert shown["config"]["options"]["precision"] == "auto"  # what was asked stays as asked
    text = gand.run("show", job).stdout
    assert "ran as   cpu  precision=fp32" in text and "optim_impl=foreach" in text
    assert "cuda_graph=false" in text


@pytest.mark.parametrize("flag,bad,valid", [("precision", "fp16", "auto"),
                                            ("channels_last", "yes", "true"),
                                            ("compile", "max", "false"),
                                            ("optim_impl", "apex", "fused")])
def test_bad_fast_path_values_are_refused_in_one_line(gand_inprocess, flag, bad, valid):
    code, out, err = gand_inprocess("submit", "gan", "--data", "ring8", "--set", f"{flag}={bad}")
    assert code != 0 and bad in err and valid in err and len(err.strip().splitlines()) == 1
    assert json.loads(gand_inprocess("list", "--json")[1]) == []
