"""`cyclegan`: unpaired image-to-image translation between two domains (lecture section 8).

Two ResNet generators (G_ab: A→B, G_ba: B→A) and two 70×70 PatchGAN discriminators (D_a, D_b)
trained with the least-squares objective, cycle consistency (weight 10) and identity (weight 5)
as in the lecture. What the lecture's sketch leaves out is here too: a 50-image history pool
per domain that D trains on (saved in checkpoints), and the learning rate held for the first
half of the steps, then decayed linearly to zero (derived from the step, so a resume needs no
scheduler state). The lecture's `CycleGAN` uses `Discriminator` before defining it; here every
network is defined before use.
"""
from __future__ import annotations

import random
from typing import Any, Optional

import torch
from torch import nn

from gand.api import (DataInfo, DataSource, Loss, Models, Option, StepContext, Translation,
                      Variant)
from gand.engine import options as engine_options
from gand.errors import GandError, UsageError, one_of
from gand.hookspecs import hookimpl

DIRECTIONS = ("a2b", "b2a")
# The PatchGAN's five 4×4 convolutions need at least this many pixels, by its receptive field.
MIN_SIZE = {70: 24, 94: 32}
PREVIEW_ROWS = 6   # preview: 6 rows of (a, G(a), F(G(a)), b, F(b), G(F(b)))


# ---------------------------------------------------------------------------------------------
# Networks


class ResnetBlock(nn.Module):
    """x + (reflect-pad, conv 3×3, IN, ReLU, reflect-pad, conv 3×3, IN)(x).

    `padding="zeros"` pads inside the convolutions with zeros instead, as the lecture's sketch
    does: the same weights, zeros at the borders instead of mirrored pixels, and no separate
    padding operations.
    """

    def __init__(self, ch: int, padding: str = "reflect"):
        super().__init__()
        if padding == "reflect":
            pad, conv = (lambda: [nn.ReflectionPad2d(1)]), (lambda: nn.Conv2d(ch, ch, 3))
        else:
            pad, conv = (lambda: []), (lambda: nn.Conv2d(ch, ch, 3, padding=1))
        self.body = nn.Sequential(
            *pad(), conv(), nn.InstanceNorm2d(ch), nn.ReLU(True),
            *pad(), conv(), nn.InstanceNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Encoder (two stride-2 convs) → residual blocks → decoder; sizes must be multiples of 4."""

    def __init__(self, channels: int, ngf: int, blocks: int, padding: str = "reflect"):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, ngf, 7),
                                   nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, 2, 1), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch, padding) for _ in range(blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1),
                       nn.InstanceNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """The 70×70 PatchGAN: one raw score per overlapping 70×70 patch.

    Three stride-2 convolutions then two stride-1 ones. `patch=94` strides the fourth too, as
    the lecture's version does: patches 94 px wide, a quarter of the scores, about half the
    work, and inputs of 32 px at least.
    """

    def __init__(self, channels: int, ndf: int, patch: int = 70):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.2, True)
        self.net = nn.Sequential(
            nn.Conv2d(channels, ndf, 4, 2, 1), act(),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1), nn.InstanceNorm2d(ndf * 2), act(),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1), nn.InstanceNorm2d(ndf * 4), act(),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2 if patch == 94 else 1, 1),
            nn.InstanceNorm2d(ndf * 8), act(),
            nn.Conv2d(ndf * 8, 1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _init(module: nn.Module) -> None:
    # CycleGAN's initialisation: N(0, 0.02) weights, zero biases.
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------------------------
# Training helpers


class ImagePool:
    """CycleGAN's history of generated images: D also sees older fakes, which damps oscillation.

    Until the pool is full every fake is stored and returned; after that each fake is, with
    probability 1/2, swapped for a random stored one (which is returned instead). The storage
    is a fixed-size tensor and the fill count a CPU tensor, both kept in models.extras, so a
    checkpoint carries the pool and a resume continues with it. The coin flips use Python's
    RNG, which checkpoints also carry.
    """

    def __init__(self, images: torch.Tensor, count: torch.Tensor):
        self.images = images
        self.count = count

    @staticmethod
    def storage(size: int, shape: tuple[int, ...], device) -> tuple[torch.Tensor, torch.Tensor]:
        """Empty storage for `size` images of `shape`: (images, fill count)."""
        return torch.zeros((size, *shape), device=device), torch.zeros((), dtype=torch.long)

    def __len__(self) -> int:
        return int(self.count)

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        """The batch D should see in place of `fakes` (detached), updating the history."""
        size = self.images.shape[0]
        if size == 0:
            return fakes
        fakes = fakes.detach()
        n = int(self.count)
        out = []
        for img in fakes:
            if n < size:
                self.images[n] = img
                n += 1
                out.append(img)
            elif random.random() < 0.5:
                j = random.randrange(size)
                out.append(self.images[j].clone())
                self.images[j] = img
            else:
                out.append(img)
        self.count.fill_(n)
        return torch.stack(out)


def lr_factor(step: int, total: int) -> float:
    """The learning-rate multiplier at `step` of `total`: 1 for the first half, then linear to 0.

    The step being made, 1-based. In the second half it falls by equal amounts each step and
    the last step still learns a little (1/(n+1) of the rate, as in CycleGAN's schedule).
    """
    half = total // 2
    if step <= half:
        return 1.0
    return max(0.0, (total - step + 1) / (total - half + 1))


def fixed_images(source: DataSource, k: int) -> torch.Tensor:
    """k real examples that are the same every time: evenly spaced, or drawn with a fixed seed."""
    x = getattr(source, "x", None)
    if isinstance(x, torch.Tensor) and x.shape[0] > 0:
        idx = torch.linspace(0, x.shape[0] - 1, k).round().long().to(x.device)
        return x[idx]
    devices = [source.device] if getattr(source, "device", None) is not None and \
        source.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # leaves the training RNG untouched
        torch.manual_seed(0)
        return source.sample(k).x


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise UsageError(f"--direction {direction!r} is invalid; expected {one_of(DIRECTIONS)}")
    return direction


# ---------------------------------------------------------------------------------------------
# The variant


class CycleGAN(Variant, Translation):
    name = "cyclegan"
    help = ("CycleGAN: unpaired translation between two image domains (--data A,B); ResNet "
            "generators, 70×70 PatchGAN, LSGAN, cycle and identity losses, image pool, lr decay")
    data_kinds = frozenset({"image"})
    domains = 2
    default_loss = "ls"
    outputs = frozenset({"logits", "critic"})
    options = {
        "res_blocks": Option(int, 9, "residual blocks in each generator", choices=(6, 9)),
        "ngf": Option(int, 64, "generator width", min=1, max=1024),
        "ndf": Option(int, 64, "discriminator width", min=1, max=1024),
        "lambda_cycle": Option(float, 10.0, "weight of the cycle-consistency loss", min=0.0),
        "lambda_identity": Option(float, 5.0, "weight of the identity loss", min=0.0),
        "pool_size": Option(int, 50, "fakes kept per domain for D (0: no pool)", min=0, max=10000),
        "image_size": Option(int, 0, "train at this size (0: the first domain's, a multiple of 4)",
                             min=0, max=4096),
        "channels": Option(int, 0, "1 or 3 channels (0: 3 if either domain is colour)",
                           choices=(0, 1, 3)),
        "res_padding": Option(str, "reflect", "padding in the residual blocks: reflect "
                              "(CycleGAN's) or zeros (the lecture's)",
                              choices=("reflect", "zeros")),
        "patch": Option(int, 70, "PatchGAN receptive field in px: 70 (CycleGAN's) or 94 (the "
                        "lecture's: its fourth convolution strided too)", choices=(70, 94)),
    }
    # CycleGAN trains one image pair at a time.
    defaults = {"batch_size": 1}

    # -- data -------------------------------------------------------------------------------

    @staticmethod
    def _shape(infos: list[DataInfo], options: dict[str, Any]) -> tuple[int, int, int]:
        size = options["image_size"]
        if not size:
            side = max(infos[0].shape[1], infos[0].shape[2])
            size = max(MIN_SIZE[options.get("patch", 70)], 4 * round(side / 4))
        channels = options["channels"] or (3 if any(i.shape[0] == 3 for i in infos) else 1)
        return channels, size, size

    def check_data(self, infos: list[DataInfo], options: dict[str, Any]) -> None:
        """Checks both domains and records the size and channels they will be loaded at.

        Both domains train at one shape, which depends on both (colour wins over grey), so it
        is resolved here and written into the job's options, where `data_shape` reads it.
        """
        super().check_data(infos, options)
        for info in infos:
            if info.shape[0] not in (1, 3):
                raise UsageError(f"variant cyclegan takes 1- or 3-channel images; {info.spec} has "
                                 f"{info.shape[0]} channels")
        # Its own step makes one update of each pair and keeps no EMA: say so rather than ignore.
        for key, neutral in (("d_steps", 1), ("ema", 0.0)):
            if options.get(key, neutral) != neutral:
                raise UsageError(f"--set {key}={options[key]}: variant cyclegan does not use "
                                 f"{key} (it updates generators and discriminators once a step)")
        size, least = options["image_size"], MIN_SIZE[options["patch"]]
        if size and (size % 4 or size < least):
            raise UsageError(f"--set image_size={size} is invalid; expected a multiple of 4 of at "
                             f"least {least}" + (" with patch=94" if options["patch"] == 94 else ""))
        channels, size, _ = self._shape(infos, options)
        options["image_size"], options["channels"] = size, channels

    def data_shape(self, info: DataInfo, options: dict[str, Any]) -> tuple[int, ...]:
        return self._shape([info], options)

    def check_loss(self, loss_cls: type[Loss]) -> None:
        """Refuses an unconstrained Wasserstein critic: on a PatchGAN it has no bound at all."""
        regs = getattr(loss_cls, "regularizers", ())
        base = getattr(loss_cls, "base", loss_cls)
        if base.name == "wasserstein" and not regs:
            raise UsageError("--loss wasserstein: cyclegan's PatchGAN critic needs a Lipschitz "
                             "constraint; use ls (the default), bce, hinge or wasserstein+gp")

    # -- building ---------------------------------------------------------------------------

    def build(self, infos: list[DataInfo], options: dict[str, Any], device: torch.device) -> Models:
        c, s, _ = self._shape(infos, options)
        # (.get: a job submitted before these options existed builds what it trained)
        padding = options.get("res_padding", "reflect")
        nets: dict[str, nn.Module] = {
            "G_ab": ResnetGenerator(c, options["ngf"], options["res_blocks"], padding),
            "G_ba": ResnetGenerator(c, options["ngf"], options["res_blocks"], padding),
            "D_a": PatchDiscriminator(c, options["ndf"], options.get("patch", 70)),
            "D_b": PatchDiscriminator(c, options["ndf"], options.get("patch", 70)),
        }
        for net in nets.values():
            net.apply(_init)
            net.to(device)
        g_params = list(nets["G_ab"].parameters()) + list(nets["G_ba"].parameters())
        d_params = list(nets["D_a"].parameters()) + list(nets["D_b"].parameters())
        opts = {"G": engine_options.optimizer(g_params, options, "g"),
                "D": engine_options.optimizer(d_params, options, "d")}
        extras: dict[str, Any] = {}
        for domain in ("a", "b"):
            images, count = ImagePool.storage(options["pool_size"], (c, s, s), device)
            extras[f"pool_{domain}"], extras[f"pool_{domain}_n"] = images, count
        return Models(nets, opts, extras)

    @staticmethod
    def pools(models: Models) -> tuple[ImagePool, ImagePool]:
        """The history pools of fake A and fake B images, over the tensors in models.extras."""
        ex = models.extras
        return ImagePool(ex["pool_a"], ex["pool_a_n"]), ImagePool(ex["pool_b"], ex["pool_b_n"])

    # -- one step ---------------------------------------------------------------------------

    def train_step(self, models: Models, loss: Loss, ctx: StepContext) -> dict[str, torch.Tensor]:
        opts, dev, bs = ctx.options, ctx.device, ctx.batch_size
        G_ab, G_ba, D_a, D_b = models.G_ab, models.G_ba, models.D_a, models.D_b
        opt_g, opt_d = models.optimizers["G"], models.optimizers["D"]
        # 0. Learning rate for this step, from the step alone (nothing to restore on resume).
        factor = lr_factor(ctx.step, ctx.total_steps)
        for opt, which in ((opt_g, "g"), (opt_d, "d")):
            base = opts[f"lr_{which}"] or opts["lr"]
            for group in opt.param_groups:
                group["lr"] = base * factor
        real_a, real_b = ctx.data[0].sample(bs).x, ctx.data[1].sample(bs).x

        def judge(D):
            def call(x):
                # Every patch score is one prediction: losses average over patches and batch.
                with ctx.autocast():
                    return D(x).float().flatten()
            return call

        # 1. Generators: fool both D's, reconstruct through the cycle, keep each domain's own
        #    images unchanged (identity), through frozen D's.
        D_a.requires_grad_(False)
        D_b.requires_grad_(False)
        with ctx.autocast():
            fake_b = G_ab(real_a).float()
            fake_a = G_ba(real_b).float()
            rec_a = G_ba(fake_b).float()
            rec_b = G_ab(fake_a).float()
        gan_b, _ = loss.g_loss(judge(D_b), real=real_b, fake=fake_b, ctx=ctx)
        gan_a, _ = loss.g_loss(judge(D_a), real=real_a, fake=fake_a, ctx=ctx)
        cycle = (rec_a - real_a).abs().mean() + (rec_b - real_b).abs().mean()
        g_total = gan_a + gan_b + opts["lambda_cycle"] * cycle
        identity = torch.zeros((), device=dev)
        if opts["lambda_identity"] > 0:
            with ctx.autocast():
                idt_b = G_ab(real_b).float()
                idt_a = G_ba(real_a).float()
            identity = (idt_b - real_b).abs().mean() + (idt_a - real_a).abs().mean()
            g_total = g_total + opts["lambda_identity"] * identity
        opt_g.zero_grad(set_to_none=True)
        g_total.backward()
        opt_g.step()
        D_a.requires_grad_(True)
        D_b.requires_grad_(True)

        # 2. Discriminators: real images against fakes from the history pools.
        pool_a, pool_b = self.pools(models)
        d_a, extra_a = loss.d_loss(judge(D_a), real=real_a, fake=pool_a.query(fake_a), ctx=ctx)
        d_b, extra_b = loss.d_loss(judge(D_b), real=real_b, fake=pool_b.query(fake_b), ctx=ctx)
        opt_d.zero_grad(set_to_none=True)
        (d_a + d_b).backward()
        opt_d.step()
        loss.after_d_step(D_a, ctx)
        loss.after_d_step(D_b, ctx)

        report = {"d_loss": (d_a + d_b).detach(), "d_a": d_a.detach(), "d_b": d_b.detach(),
                  "g_loss": g_total.detach(), "g_gan": (gan_a + gan_b).detach(),
                  "cycle": cycle.detach(), "identity": identity.detach(),
                  "lr": torch.tensor(opt_g.param_groups[0]["lr"], device=dev)}
        report.update({f"{k}_a": v.detach() for k, v in extra_a.items()})
        report.update({f"{k}_b": v.detach() for k, v in extra_b.items()})
        return report

    # -- translation ------------------------------------------------------------------------

    @torch.no_grad()
    def translate(self, models: Models, images: torch.Tensor, direction: str = "a2b",
                  batch: int = 16) -> torch.Tensor:
        """Images of one domain in [-1, 1] translated to the other (a2b: G_ab, b2a: G_ba)."""
        G = models.G_ab if check_direction(direction) == "a2b" else models.G_ba
        dev = next(G.parameters()).device
        was = G.training
        G.eval()
        out = [G(part.to(dev)).float() for part in images.split(batch)]
        G.train(was)
        return torch.cat(out) if out else images.new_zeros((0, *images.shape[1:]))

    @torch.no_grad()
    def cycle_triplets(self, models: Models, images: torch.Tensor,
                       direction: str = "a2b") -> torch.Tensor:
        """For each image x: x, its translation G(x) and the way back F(G(x)), interleaved.

        Returns 3·n images (x₀, G(x₀), F(G(x₀)), x₁, …); saved with nrow = 3 (or a multiple of
        3), each row shows triplets. direction "a2b" starts from domain A, "b2a" from B.
        """
        back = "b2a" if check_direction(direction) == "a2b" else "a2b"
        dev = next(models.G_ab.parameters()).device
        x = images.to(dev).float()
        there = self.translate(models, x, direction)
        again = self.translate(models, there, back)
        return torch.stack([x, there, again], dim=1).flatten(0, 1)

    def sample(self, models: Models, n: int, *, generator: Optional[torch.Generator] = None,
               direction: str = "a2b", images: Optional[torch.Tensor] = None,
               **_: Any) -> torch.Tensor:
        """Translations of the first n of `images` (there is no latent to sample from)."""
        if images is None:
            raise UsageError("variant cyclegan translates images rather than sampling noise; use "
                             "gand translate JOB --input DIR --out DIR [--direction a2b|b2a]")
        return self.translate(models, images[:n], direction)

    def preview(self, models: Models, data: list[DataSource], generator: Optional[torch.Generator],
                n: int = 64) -> torch.Tensor:
        """Rows of (a, G(a), F(G(a)), b, F(b), G(F(b))) from fixed real images of each domain.

        36 images: the trainer's square grid makes them 6 rows of 6, so each row reads as an
        A→B→A triplet beside a B→A→B one.
        """
        if not isinstance(data, (list, tuple)) or len(data) != 2:
            raise GandError("cyclegan previews translate real images: load both domains' data "
                            "(Run.build(..., load_data=True)) or call cycle_triplets(models, images)")
        a = self.cycle_triplets(models, fixed_images(data[0], PREVIEW_ROWS), "a2b")
        b = self.cycle_triplets(models, fixed_images(data[1], PREVIEW_ROWS), "b2a")
        rows = [torch.cat([a[3 * i:3 * i + 3], b[3 * i:3 * i + 3]]) for i in range(PREVIEW_ROWS)]
        return torch.cat(rows)


@hookimpl
def gand_register_variants():
    return [CycleGAN]
