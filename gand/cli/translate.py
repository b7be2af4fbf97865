"""`gand translate`: a two-domain job's generator applied to a folder of images."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gand.cli.context import jobs, print_json, registry, short
from gand.cli.paths import output_folder, writing
from gand.errors import UsageError, one_of

DIRECTIONS = ("a2b", "b2a")
FOLDER = "folder"  # the dataset type that reads a folder of images


def _input_files(folder: Path) -> list[Path]:
    """The loose image files the folder dataset reads, in its order (sorted paths)."""
    from gand.engine.images import is_regular_file, open_image

    exts = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not is_regular_file(p) or not p.name.lower().endswith(exts):
            continue
        try:
            with open_image(p) as im:
                im.verify()
        except Exception:
            continue  # the loader skips unreadable (and oversized) files too
        out.append(p)
    return out


def _out_names(files: list[Path]) -> list[str]:
    """a.jpg → a.png; when two inputs share a stem, both keep their full name plus .png."""
    stems = [f.stem for f in files]
    return [f"{f.stem}.png" if stems.count(f.stem) == 1 else f"{f.name}.png" for f in files]


def translate(
    job: Annotated[str, typer.Argument(help="job id or unique prefix (a two-domain job, e.g. cyclegan)")],
    input_: Annotated[Path, typer.Option("--input", help="folder of images of the source domain")],
    out: Annotated[Path, typer.Option("--out", help="folder for the translated PNGs (same names)")],
    direction: Annotated[str, typer.Option(help="a2b (first --data domain to second) or b2a")] = "a2b",
    checkpoint: Annotated[str, typer.Option(help="latest, best or a step")] = "latest",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Translate every image in a folder with a trained two-domain job (e.g. cyclegan)."""
    from torchvision.utils import save_image

    from gand.cli.outputs import load_run

    if direction not in DIRECTIONS:
        raise UsageError(f"--direction {direction!r} is invalid; expected {one_of(DIRECTIONS)}")
    j = jobs().find(job)
    config = jobs().config(j)
    variant = registry().variant(config.variant)
    from gand.api import Translation

    if not isinstance(variant, Translation):
        raise UsageError(f"job {short(j.id)} is a {variant.name} job; gand translate needs a "
                         f"two-domain translation job such as cyclegan")
    if not input_.is_dir():
        raise UsageError(f"--input {input_}: no such folder")
    output_folder("--out", out)
    # Read at the job's shape by the same folder dataset that trains on image folders.
    folder = registry().dataset_type(FOLDER)
    info = folder.describe(str(input_))  # a folder without a readable image is a UsageError
    if info.num_classes:
        raise UsageError(f"--input {input_} holds class subfolders; give one flat folder of images")
    files = _input_files(input_)
    shape = tuple(config.data[0 if direction == "a2b" else 1].shape)

    _, run, step = load_run(j.id, checkpoint, device)
    source = folder.load(str(input_), info, shape, run.device)
    x = getattr(source, "x", None)
    if x is None or x.shape[0] != len(files):
        raise UsageError(f"--input {input_}: could not match the images read to file names "
                         f"({len(files)} files)")
    y = run.variant.translate(run.models, x, direction).cpu()
    names = _out_names(files)
    with writing("--out", out):
        out.mkdir(parents=True, exist_ok=True)
        for img, name in zip(y, names):
            save_image(img.float(), out / name, normalize=True, value_range=(-1, 1))
    if json_:
        print_json({"job": j.id, "step": step, "direction": direction, "n": len(names),
                    "shape": list(y.shape[1:]), "out": str(out), "files": names})
    else:
        typer.echo(f"translated {len(names)} images {direction} at {tuple(y.shape[1:])} from "
                   f"step {step} into {out}")


def register(app: typer.Typer) -> None:
    app.command("translate")(translate)
