"""CUDA graphs: a whole training step replayed as one launch (`--set cuda_graph=true`).

A small model's step on a GPU is bound by launching kernels, not by running them: MNIST DCGAN
at batch 64 issues about 290 operations a step, and at 7.7 ms a step on an H100 (README, Speed)
the GPU waits on the Python and dispatch cost of each. A CUDA graph records the step's kernels
once and replays them with one call.

A step can be replayed only if nothing in it depends on the host from one step to the next:
every random number is drawn on the device (torch makes its CUDA generator graph-safe), the
optimizers keep their step counts on the device (`capturable`), and no value the step reads
changes between steps on the host side. `unsupported` names what breaks that before a job is
queued; the rest is checked by capturing: a step that synchronises with the host makes the
capture fail, and the job then trains eagerly, saying why in its `runtime`.

Not captured, so it stays correct as the step advances: the EMA of G (its decay ramps up with
the step; `Variant.after_update` runs after each replay), metrics (the replay's outputs are
copied out once a step, one kernel), checkpoints and sample grids (between replays).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from gand.api import Loss, Models, StepContext, Variant

# Eager steps before capture, on a side stream, as torch's documentation does: the caching
# allocator and cuDNN's algorithm choice settle before the kernels are frozen into a graph.
WARMUP_STEPS = 3


def unsupported(variant: Variant, loss_cls: type[Loss], options: dict[str, Any]) -> Optional[str]:
    """Why this job's step cannot be captured as a CUDA graph, or None if it can be tried."""
    from gand.engine.adversarial import AdversarialVariant
    from gand.engine.fastpath import needs_double_backward

    # Only AdversarialVariant's own step is known to stay on the device: a subclass that
    # replaces `update`, or `train_step` around it (stylegan: style mixing, w_avg), may not.
    if (not isinstance(variant, AdversarialVariant)
            or type(variant).update is not AdversarialVariant.update
            or type(variant).train_step is not AdversarialVariant.train_step):
        return f"variant {variant.name} has its own training step"
    if needs_double_backward(loss_cls):
        return f"loss {loss_cls.name} differentiates through a gradient"
    if options.get("ada"):
        return "ADA changes its augmentation probability on the host"
    if float(options.get("instance_noise", 0.0)) > 0:
        return "instance noise is annealed step by step on the host"
    if float(options.get("lr_decay", 0.0)) > 0:
        return "lr_decay changes the learning rates step by step on the host"
    if str(options.get("compile", "auto")) == "true":
        return "compile=true already rewrites the step (choose one of the two)"
    return None


class GraphedStep:
    """`variant.update` recorded once and replayed each step; EMA after it, eagerly.

    Calls 1..WARMUP_STEPS train eagerly on a side stream; the next captures the step and
    replays it (capture records kernels without running them), and every later call replays.
    If capturing fails, every later step is eager and `failed` says why.
    """

    def __init__(self, variant: Variant, models: Models, loss: Loss):
        self.variant, self.models, self.loss = variant, models, loss
        self.calls = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.outputs: dict[str, torch.Tensor] = {}
        self.failed: Optional[str] = None

    def __call__(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.failed or self.calls <= WARMUP_STEPS:
            report = self._eager(ctx, side_stream=not self.failed)
        else:
            if self.graph is None:
                self._capture(ctx)
            if self.graph is None:
                report = self._eager(ctx, side_stream=False)
            else:
                self.graph.replay()
                # The replay writes the same output tensors each time: the loop keeps a step's
                # metrics until its batched flush, so they are copied out (one kernel; every
                # metric is a scalar, as the flush reads them).
                copied = torch.stack([v.float().reshape(()) for v in self.outputs.values()])
                report = dict(zip(self.outputs, copied.unbind(0)))
        self.variant.after_update(self.models, ctx)
        return report

    def _eager(self, ctx: StepContext, side_stream: bool) -> dict[str, torch.Tensor]:
        if not side_stream:
            return self.variant.update(self.models, self.loss, ctx)
        here = torch.cuda.current_stream(ctx.device)
        side = torch.cuda.Stream(ctx.device)
        side.wait_stream(here)
        with torch.cuda.stream(side):
            report = self.variant.update(self.models, self.loss, ctx)
        here.wait_stream(side)
        return report

    def _capture(self, ctx: StepContext) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the job's background threads (checkpoint writer, lease keeper) may
            # make CUDA calls of their own meanwhile; only this thread's must be capturable.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                report = self.variant.update(self.models, self.loss, ctx)
        except Exception as e:  # a host synchronisation in the step, an op CUDA cannot capture
            self.failed = f"capture failed, trained eagerly: {type(e).__name__}: {e}"
            self.failed = self.failed.splitlines()[0][:300]
            torch.cuda.synchronize(ctx.device)
            return
        self.graph, self.outputs = graph, dict(report)


def step_function(variant: Variant, models: Models, loss: Loss,
                  graphed: bool) -> Callable[[StepContext], dict[str, torch.Tensor]]:
    """The function the loop calls each step: the variant's own step, or its graphed update."""
    if graphed:
        return GraphedStep(variant, models, loss)
    return lambda ctx: variant.train_step(models, loss, ctx)
