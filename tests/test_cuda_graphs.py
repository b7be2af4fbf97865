"""CUDA graphs (gand/engine/graphs.py, `--set cuda_graph=true`).

On any machine: which steps can be captured is decided at submit, in one line, before a job is
queued; a CPU job cannot ask for a graph; the step the graph records (`update`) plus what runs
after each replay (`after_update`, the EMA) is exactly the variant's eager step.
On a CUDA machine (deploy/gpu-check.sh runs this file there): a graphed job gives the eager
loss trajectory, resumes from its checkpoint to the same losses, and a step that cannot be
captured trains eagerly with a note saying why.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

from gand.engine import graphs
from gand.engine.trainer import Hooks, Run, train
from gand.errors import UsageError
from gand.jobspec import build_config, loss_class
from support import MNIST

SMALL_DCGAN = ["ngf=8", "ndf=8"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def build(registry, variant: str, data: str, sets: list[str], steps: int = 4, bs: int = 8,
          device: str = "cpu", loss: str | None = None) -> Run:
    cfg = build_config(registry, variant=variant, data=data, loss=loss, steps=steps,
                       batch_size=bs, sets=sets, seed=3, device=device, checkpoint_every=4,
                       sample_every=0)
    return Run.build(cfg, registry)


def losses_of(run: Run, tmp_path, start: int = 0, notes: list | None = None):
    rows, states = [], []
    hooks = Hooks(report=lambda r, step: rows.extend(r),
                  checkpoint=lambda step, state: states.append(copy.deepcopy(state)),
                  note=(notes.append if notes is not None else lambda text: None))
    train(run, tmp_path, hooks, start_step=start)
    return [r for r in rows if r[1] in ("d_loss", "g_loss", "d_real_acc")], states


@pytest.mark.parametrize("args,says", [
    (["cyclegan", "--data", f"mnist:{MNIST},mnist:{MNIST}"], "variant cyclegan has its own training step"),
    (["stylegan", "--data", f"mnist:{MNIST}"], "variant stylegan has its own training step"),
    (["began", "--data", f"mnist:{MNIST}"], "variant began has its own training step"),
    (["wgan-gp", "--data", f"mnist:{MNIST}"], "loss wgan-gp differentiates through a gradient"),
    (["dcgan", "--data", f"mnist:{MNIST}", "--loss", "hinge+r1",
      "--set", "d_norm=instance"], "loss hinge+r1 differentiates through a gradient"),
    (["dcgan", "--data", f"mnist:{MNIST}", "--set", "ada=true"], "ADA"),
    (["dcgan", "--data", f"mnist:{MNIST}", "--set", "instance_noise=0.1"], "instance noise"),
    (["gan", "--data", "ring8"], "lr_decay"),   # the ring8 recipe decays its learning rates
    (["dcgan", "--data", f"mnist:{MNIST}", "--set", "compile=true"], "compile=true"),
    (["dcgan", "--data", f"mnist:{MNIST}", "--device", "cpu"], "needs a CUDA device"),
    (["dcgan", "--data", f"mnist:{MNIST}", "--gpus", "0"], "--gpus 0"),
])
def test_a_step_that_cannot_be_captured_is_refused_at_submit(gand_inprocess, args, says):
    code, out, err = gand_inprocess("submit", *args, "--set", "cuda_graph=true")
    assert code == 2 and says in err and "cuda_graph" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert json.loads(gand_inprocess("list", "--json")[1]) == []


def test_capturable_jobs_pass_submit_and_a_cpu_worker_refuses_them(registry):
    for variant, data, sets in [("dcgan", f"mnist:{MNIST}", []), ("wgan", f"mnist:{MNIST}", []),
                                ("cgan", f"mnist:{MNIST}", []), ("sagan", f"mnist:{MNIST}", []),
                                ("gan", "ring8", ["lr_decay=0"]),
                                ("dcgan", f"mnist:{MNIST}", ["ema=0.99", "d_steps=2"])]:
        cfg = build_config(registry, variant=variant, data=data, steps=4,
                           sets=sets + ["cuda_graph=true"])
        assert cfg.options["cuda_graph"] == "true"
        assert cfg.gpus == 1  # it waits for a worker with a GPU
        assert graphs.unsupported(registry.variant(variant), loss_class(registry, cfg.loss),
                                  cfg.options) is None
    # A job with device auto that lands on a CPU worker fails with one line, as the worker
    # records it, rather than training without what it asked for.
    cfg = build_config(registry, variant="dcgan", data=f"mnist:{MNIST}", steps=4,
                       sets=SMALL_DCGAN + ["cuda_graph=true"])
    with pytest.raises(UsageError, match="cuda_graph=true needs a CUDA device; this job trains on cpu"):
        Run.build(cfg, registry, device="cpu")
    assert build(registry, "dcgan", f"mnist:{MNIST}", SMALL_DCGAN).runtime.cuda_graph is False


def test_the_graphed_part_and_the_eager_part_make_the_variants_step(registry):
    """`update` then `after_update` (the EMA, left out of a graph) is `train_step`: two runs
    from one seed, one stepped each way, end with the same weights, EMA copy included."""
    sets = SMALL_DCGAN + ["ema=0.9", "d_steps=2"]
    a, b = (build(registry, "dcgan", f"mnist:{MNIST}", sets) for _ in range(2))
    torch.manual_seed(0)
    for step in (1, 2, 3):
        a.variant.train_step(a.models, a.loss, a.context(step))
    torch.manual_seed(0)
    for step in (1, 2, 3):
        b.variant.update(b.models, b.loss, b.context(step))
        b.variant.after_update(b.models, b.context(step))
    for name in ("G", "D", "G_ema"):
        sa, sb = a.models.nets[name].state_dict(), b.models.nets[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_a_graphed_jobs_checkpoint_resumes_on_a_cpu_worker(registry, tmp_path):
    """A CUDA graph job's checkpoint carries capturable and fused param groups: a CPU run that
    loads it trains on with its own kernels (capturable Adam refuses CPU tensors)."""
    _, states = losses_of(build(registry, "dcgan", f"mnist:{MNIST}", SMALL_DCGAN, steps=4),
                          tmp_path / "a")
    state = copy.deepcopy(states[-1])
    for opt in state["models"]["optimizers"].values():
        for group in opt["param_groups"]:
            group.update(capturable=True, fused=True)  # as the CUDA job saved them
    run = build(registry, "dcgan", f"mnist:{MNIST}", SMALL_DCGAN, steps=6)
    assert run.restore(state) == 4
    assert all(not g["capturable"] and not g["fused"]
               for o in run.models.optimizers.values() for g in o.param_groups)
    after, _ = losses_of(run, tmp_path / "b", start=4)
    assert [s for s, k, _ in after if k == "g_loss"] == [5, 6]


# -- on a CUDA GPU -----------------------------------------------------------------------------

@pytest.fixture
def deterministic_cudnn():
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


@cuda
@pytest.mark.parametrize("variant,data,sets,bs", [
    ("dcgan", f"mnist:{MNIST}", ["ema=0.99"], 64),
    ("gan", "ring8", ["lr_decay=0"], 256),  # the recipe's mixture of 32, packing and EMA
])
def test_a_graphed_job_follows_the_eager_trajectory_and_resumes(registry, tmp_path, variant, data,
                                                                 sets, bs, deterministic_cudnn):
    steps = 12
    eager, _ = losses_of(build(registry, variant, data, sets + ["cuda_graph=false"], steps, bs,
                               "cuda"), tmp_path / "eager")
    run = build(registry, variant, data, sets + ["cuda_graph=true"], steps, bs, "cuda")
    assert run.runtime.cuda_graph and run.runtime.optim_impl == "fused"
    notes: list[str] = []
    graphed, states = losses_of(run, tmp_path / "graphed", notes=notes)
    assert notes == [] and isinstance(run._step, graphs.GraphedStep) and run._step.graph is not None
    assert [(s, k) for s, k, _ in graphed] == [(s, k) for s, k, _ in eager]
    values = lambda rows: torch.tensor([v for *_, v in rows])  # noqa: E731
    assert torch.allclose(values(graphed), values(eager), rtol=1e-3, atol=1e-4)
    # From the checkpoint at step 4 (taken after replays began): a fresh run, captured anew.
    resumed = build(registry, variant, data, sets + ["cuda_graph=true"], steps, bs, "cuda")
    assert resumed.restore(next(s for s in states if s["step"] == 4)) == 4
    after, _ = losses_of(resumed, tmp_path / "resumed", start=4)
    tail = [r for r in graphed if r[0] > 4]
    assert [(s, k) for s, k, _ in after] == [(s, k) for s, k, _ in tail]
    assert torch.allclose(values(after), values(tail), rtol=1e-3, atol=1e-4)


@cuda
def test_a_step_that_syncs_with_the_host_trains_eagerly_with_a_note(registry, tmp_path):
    """A third-party loss that reads a value back (`.item()`) cannot be captured: the job
    trains on, eagerly, and says so once."""
    run = build(registry, "dcgan", f"mnist:{MNIST}", SMALL_DCGAN + ["cuda_graph=true"], 8, 16,
                "cuda")
    d_loss = run.loss.d_loss

    def syncing(*args, **kwargs):
        loss, extra = d_loss(*args, **kwargs)
        if loss.item() > 1e9:  # a host synchronisation: forbidden while capturing
            raise AssertionError
        return loss, extra

    run.loss.d_loss = syncing
    notes: list[str] = []
    rows, _ = losses_of(run, tmp_path, notes=notes)
    assert len(notes) == 1 and notes[0].startswith("capture failed, trained eagerly")
    assert sorted({s for s, k, _ in rows if k == "g_loss"}) == list(range(1, 9))
