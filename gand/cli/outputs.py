"""Commands that use a trained generator: generate."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from gand.cli.context import jobs, print_json, registry
from gand.cli.paths import output_file, output_folder, writing
from gand.errors import UsageError


def load_run(job_id: str, which: str = "latest", device: str = "cpu"):
    """The job's models restored from one of its checkpoints (see JobService.load_run)."""
    return jobs().load_run(registry(), job_id, which, device)


def generate(
    job: Annotated[str, typer.Argument(help="job id or unique prefix")],
    n: Annotated[int, typer.Option("--n", help="how many samples")] = 64,
    out: Annotated[Path, typer.Option("--out", help=".npy (vectors), .png grid or a folder (images)")] = Path("samples.png"),
    seed: Annotated[Optional[int], typer.Option(help="random seed")] = None,
    checkpoint: Annotated[str, typer.Option(help="latest, best or a step")] = "latest",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    label: Annotated[Optional[int], typer.Option(help="class to draw (conditional variants)")] = None,
    truncation: Annotated[Optional[float], typer.Option(
        help="truncation psi: styles pulled toward the mean style (stylegan; 1 = off)")] = None,
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Draw samples from a job's generator."""
    if n < 1 or n > 1_000_000:
        raise UsageError(f"--n {n} is invalid; expected 1 to 1000000")
    if seed is not None and not 0 <= seed < 2**63:
        raise UsageError(f"--seed {seed} is invalid; expected 0 ≤ seed < 2^63")
    if truncation is not None and not (math.isfinite(truncation) and 0 <= truncation <= 2):
        raise UsageError(f"--truncation {truncation} is invalid; expected a number from 0 (every "
                         f"sample the mean style) to 1 (off), at most 2")
    # Checked before the model is loaded: a path that cannot be written costs nothing.
    if out.suffix:
        output_file("--out", out)
    else:
        output_folder("--out", out)

    import numpy as np
    import torch

    from gand.engine import samples

    j, run, step = load_run(job, checkpoint, device)
    g = torch.Generator(device=run.device)
    g.manual_seed(seed if seed is not None else torch.seed() % 2**63)
    kwargs = {}
    if label is not None:
        # Only conditional variants take a label; it must be one of the classes trained on.
        classes = int(run.models.extras.get("num_classes") or 0)
        if not run.variant.needs_labels:
            raise UsageError(f"--label {label}: variant {run.variant.name} is not conditional")
        if not 0 <= label < classes:
            raise UsageError(f"--label {label} is invalid; expected 0 to {classes - 1}")
        kwargs["label"] = label
    if truncation is not None:
        from gand.api import Truncation

        if not isinstance(run.variant, Truncation):
            raise UsageError(f"--truncation {truncation}: variant {run.variant.name} has no "
                             f"truncation trick (stylegan has)")
        kwargs["truncation"] = truncation
    x = run.variant.sample(run.models, n, generator=g, **kwargs).cpu()
    if x.dim() == 2:
        if out.suffix != ".npy":
            raise UsageError(f"--out {out}: vector samples are written as .npy; use a path ending in .npy")
        with writing("--out", out):
            out.parent.mkdir(parents=True, exist_ok=True)
            np.save(out, x.numpy())
    elif out.suffix.lower() == ".png":
        with writing("--out", out):
            samples.save_grid(x, out)
    elif out.suffix:
        raise UsageError(f"--out {out}: images are written as a .png grid or into a folder (no suffix)")
    else:
        with writing("--out", out):
            samples.save_images(x, out)
    if json_:
        print_json({"job": j.id, "step": step, "n": n, "shape": list(x.shape), "out": str(out)})
    else:
        typer.echo(f"wrote {n} samples of shape {tuple(x.shape[1:])} from step {step} to {out}")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
