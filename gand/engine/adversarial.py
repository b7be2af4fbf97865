"""The training step shared by every one-generator, one-discriminator variant.

Variants such as gan, dcgan, wgan or cgan only say how to build G and D; this class owns the
update order (k discriminator updates, then one generator update, then EMA), label conditioning
and the latent prior, so each of them trains the same way.
"""
from __future__ import annotations

import copy
import weakref
from abc import abstractmethod
from typing import Any, Optional

import torch
from torch import nn

from gand.api import DataInfo, LatentSpace, Loss, Models, StepContext, Variant
from gand.engine import augment, tricks
from gand.engine import options as engine_options


class AdversarialVariant(LatentSpace, Variant):
    """A Variant whose subclasses provide `networks()`; conditional ones set needs_labels.

    Its step augments every image D sees when `--set ada=true`, and `build` wraps D in the
    tricks of gand.engine.tricks (pack, mbstd, spectral norm) while the step adds instance
    noise to D's inputs: a subclass that keeps this build and step may declare
    gand.api.SupportsADA and gand.api.SupportsDTricks.
    """

    @abstractmethod
    def networks(self, info: DataInfo, options: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
        """A fresh (G, D) pair for data described by `info`."""

    def latent(self, models: Models, n: int, device: torch.device,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The prior: n standard normal latents of the size recorded at build time."""
        return torch.randn(n, models.extras["nz"], device=device, generator=generator)

    # -- building ---------------------------------------------------------------------------

    def build(self, infos: list[DataInfo], options: dict[str, Any], device: torch.device) -> Models:
        G, D = self.networks(infos[0], options)
        D = tricks.wrap_d(D, options)  # pack → D (with mbstd before its last layer, spectral)
        G, D = G.to(device), D.to(device)
        nets: dict[str, nn.Module] = {"G": G, "D": D}
        if options["ema"] > 0:
            # The EMA copy is what `generate` uses when present (less noisy than G itself).
            nets["G_ema"] = copy.deepcopy(G).requires_grad_(False)
        opts = {"G": engine_options.optimizer(G.parameters(), options, "g"),
                "D": engine_options.optimizer(D.parameters(), options, "d")}
        extras = {"num_classes": infos[0].num_classes or 0, "nz": int(options["nz"])}
        if options.get("ada"):
            extras["ada_p"] = 0.0  # in extras, so a checkpoint carries it across a resume
        return Models(nets, opts, extras)

    # -- one generator update ---------------------------------------------------------------

    def _labels(self, models: Models, n: int, device, generator=None) -> Optional[torch.Tensor]:
        if not self.needs_labels:
            return None
        return torch.randint(0, models.extras["num_classes"], (n,), device=device, generator=generator)

    def generate_from(self, G: nn.Module, z: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        return G(z) if y is None else G(z, y)

    def discriminate(self, D: nn.Module, x: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        # Losses see a flat vector of logits/critic scores (float32 even under autocast).
        out = (D(x) if y is None else D(x, y)).float()
        n = out.shape[0]
        # One score per example (most Ds) is a view, free in both passes; a map of scores (a
        # patch D) is averaged per example. (A mean over one value cost a ring8 step 3%.)
        return out.reshape(n) if out.numel() == n else out.reshape(n, -1).mean(1)

    def train_step(self, models: Models, loss: Loss, ctx: StepContext) -> dict[str, torch.Tensor]:
        report = self.update(models, loss, ctx)
        self.after_update(models, ctx)
        return report

    def update(self, models: Models, loss: Loss, ctx: StepContext) -> dict[str, torch.Tensor]:
        """D's updates, then G's: the part of a step that a CUDA graph can replay
        (gand.engine.graphs), since it reads no step-dependent value from the host once
        ADA, instance noise and learning-rate decay are off."""
        G, D = models.G, models.D
        opt_g, opt_d = models.optimizers["G"], models.optimizers["D"]
        bs, opts, dev = ctx.batch_size, ctx.options, ctx.device
        report: dict[str, torch.Tensor] = {}
        ada_p = float(models.extras.get("ada_p", 0.0))
        # Instance noise's std for this step, annealed from σ to 0 over the run.
        sigma = tricks.noise_std(opts, ctx.step, ctx.total_steps)

        # 1. Discriminator: d_steps updates, each on a fresh real batch and fresh fakes.
        set_trainable(D, True)
        for _ in range(opts["d_steps"]):
            real = ctx.data[0].sample(bs)
            # Fakes take the real batch's labels, so D sees every class on both sides and one
            # label tensor serves real, fake and interpolated inputs alike.
            y = real.y if self.needs_labels else None
            with torch.no_grad(), ctx.autocast():
                fake = self.generate_from(G, self.latent(models, bs, dev), y).float()

            def d_call(x, _y=y):
                # With ADA every input of D (real, fake, interpolated) is augmented alike, and
                # instance noise is added to every one of them.
                with ctx.autocast():
                    return self.discriminate(D, tricks.noisy(augment.augment(x, ada_p), sigma), _y)

            d_loss, extra = loss.d_loss(d_call, real=real.x, fake=fake, ctx=ctx)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            loss.after_d_step(D, ctx)
        report["d_loss"] = d_loss.detach()
        report.update({k: v.detach() for k, v in extra.items()})
        if "ada_p" in models.extras:
            # ADA: every few steps, move p toward the overfitting target (D's sign on reals).
            if ctx.step % augment.ADA_INTERVAL == 0:
                with torch.no_grad():
                    scores = d_call(real.x)
                models.extras["ada_p"] = augment.adjust(ada_p, scores, opts, bs)
            report["ada_p"] = torch.tensor(models.extras["ada_p"], device=dev)

        # 2. Generator: one update through a frozen D (no wasted gradients for D's weights).
        set_trainable(D, False)
        y_fake = self._labels(models, bs, dev)
        with ctx.autocast():
            fake = self.generate_from(G, self.latent(models, bs, dev), y_fake).float()

        def d_fake(x, _y=y_fake):
            with ctx.autocast():
                return self.discriminate(D, tricks.noisy(augment.augment(x, ada_p), sigma), _y)

        g_loss, extra = loss.g_loss(d_fake, real=real.x, fake=fake, ctx=ctx)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        set_trainable(D, True)
        report["g_loss"] = g_loss.detach()
        report.update({k: v.detach() for k, v in extra.items()})
        return report

    def after_update(self, models: Models, ctx: StepContext) -> None:
        """3. The EMA of G's weights, when asked for (its decay ramps up with the step, so a
        CUDA graph leaves it out and this runs after each replay)."""
        if "G_ema" in models.nets:
            ema_update(models.nets["G_ema"], models.G, ema_decay(ctx.options["ema"], ctx.step))

    # -- generation -------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, models: Models, n: int, *, generator: Optional[torch.Generator] = None,
               label: Optional[int] = None, **_: Any) -> torch.Tensor:
        G = models.nets.get("G_ema", models.G)
        was_training = G.training
        G.eval()
        device = next(G.parameters()).device
        z = self.latent(models, n, device, generator)
        y = None
        if self.needs_labels:
            y = (torch.full((n,), int(label), device=device, dtype=torch.long) if label is not None
                 else self._labels(models, n, device, generator))
        out = self.generate_from(G, z, y).float()
        G.train(was_training)
        return out


_PARAMS: "weakref.WeakKeyDictionary[nn.Module, list[nn.Parameter]]" = weakref.WeakKeyDictionary()


def set_trainable(net: nn.Module, flag: bool) -> None:
    """net.requires_grad_(flag), from a list of its parameters made once: Module.requires_grad_
    walks every submodule each call (three calls a step cost a ring8 step 0.7% on a CPU)."""
    params = _PARAMS.get(net)
    if params is None:
        params = _PARAMS[net] = list(net.parameters())
    for p in params:
        p.requires_grad_(flag)


def ema_decay(decay: float, step: int) -> float:
    """The EMA decay at generator step `step`: `decay`, ramped up as (1 + step) / (10 + step)
    early on (TensorFlow's ExponentialMovingAverage with num_updates), so the average spans
    at most about a tenth of the steps so far and never drags the initial weights along: a
    decay of 0.999 then helps a run of 500 steps as well as one of 20,000."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1−decay)·model for parameters; buffers (BatchNorm stats) copied.
    One multi-tensor kernel each where torch has one (CUDA), not one per tensor."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    buffers = list(ema.buffers())
    if buffers:
        torch._foreach_copy_(buffers, list(model.buffers()))
