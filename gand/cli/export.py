"""`gand export`: a job's metrics, evaluations and sample grids for TensorBoard or as JSON Lines."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from gand.cli.context import jobs, print_json, short
from gand.errors import UsageError


def export(
    job: Annotated[list[str], typer.Argument(help="job id(s) or unique prefix(es)")],
    tensorboard: Annotated[Optional[Path], typer.Option(
        "--tensorboard", help="write TensorBoard event files into DIR/<job>/ (tensorboard --logdir DIR)",
        metavar="DIR")] = None,
    jsonl: Annotated[Optional[Path], typer.Option(
        "--jsonl", help="write metrics and evaluations as JSON Lines to FILE ('-': stdout)",
        metavar="FILE")] = None,
    json_: Annotated[bool, typer.Option("--json", help="machine-readable summary")] = False,
) -> None:
    """Export jobs' metrics, evaluations and sample grids to TensorBoard or JSON Lines."""
    from gand import export as exporter

    if tensorboard is None and jsonl is None:
        raise UsageError("nothing to export to; give --tensorboard DIR and/or --jsonl FILE")
    if jsonl is not None and str(jsonl) == "-" and json_:
        raise UsageError("--jsonl - and --json both write to stdout; pick one")
    # With --jsonl -, stdout carries the lines: what is said for people goes to stderr.
    to_stderr = jsonl is not None and str(jsonl) == "-"
    service = jobs()
    for ref in job:
        service.find(ref)  # every id checked before anything is written
    summary: dict = {}
    if tensorboard is not None:
        if tensorboard.exists() and not tensorboard.is_dir():
            raise UsageError(f"--tensorboard {tensorboard}: exists and is not a folder")
        runs = [exporter.tensorboard(service, ref, tensorboard) for ref in job]
        summary["tensorboard"] = [{"job": w.job_id, "path": str(w.path), "scalars": w.scalars,
                                   "images": w.images, "skipped_images": w.skipped_images}
                                  for w in runs]
        if not json_:
            for w in runs:
                missing = f" ({w.skipped_images} sample files not on this machine)" \
                    if w.skipped_images else ""
                typer.echo(f"{short(w.job_id)}: {w.scalars} scalars and {w.images} sample grids "
                           f"in {w.path}{missing}", err=to_stderr)
            typer.echo(f"view them: tensorboard --logdir {tensorboard}", err=to_stderr)
    if jsonl is not None:
        if str(jsonl) == "-":
            lines = exporter.jsonl(service, job, sys.stdout)
        else:
            jsonl.parent.mkdir(parents=True, exist_ok=True)
            with open(jsonl, "w") as f:
                lines = exporter.jsonl(service, job, f)
            if not json_:
                typer.echo(f"{lines} lines in {jsonl}")
        summary["jsonl"] = {"path": str(jsonl), "lines": lines}
    if json_:
        print_json(summary)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
