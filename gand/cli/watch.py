"""Commands that watch training: follow (live) and metrics (history)."""
from __future__ import annotations

import csv
import json
import sys
import time
from typing import Annotated

import typer

from gand.cli.context import print_json, short, store
from gand.errors import UsageError
from gand.store import TERMINAL, JobStatus

POLL_SECONDS = 0.5
LOSS_KEYS = ("d_loss", "g_loss")


def _line(job, metrics: dict[str, float]) -> str:
    shown = [k for k in LOSS_KEYS if k in metrics] + [k for k in sorted(metrics) if k not in LOSS_KEYS]
    parts = [f"{k}={metrics[k]:.4g}" for k in shown]
    return f"{job.status:10} step {job.step}/{job.total_steps}  " + "  ".join(parts)


def follow(
    job: Annotated[str, typer.Argument(help="job id or unique prefix")],
    json_: Annotated[bool, typer.Option("--json", help="one JSON object per change (JSON Lines)")] = False,
) -> None:
    """Show progress and losses live until the job ends; exit 0 only if it succeeded."""
    s = store()
    j = s.find_job(job)
    if json_:
        _follow_json(s, j.id)
    tty = sys.stdout.isatty()
    last = None
    if tty:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                            TextColumn("{task.fields[losses]}"))
        progress.start()
        task = progress.add_task(short(j.id), total=j.total_steps, losses="")
    try:
        while True:
            j = s.get_job(j.id)
            metrics = s.latest_metrics(j.id)
            if tty:
                losses = "  ".join(f"{k}={metrics[k]:.4g}" for k in LOSS_KEYS if k in metrics)
                progress.update(task, completed=j.step, total=j.total_steps,
                                description=f"{short(j.id)} {j.status}", losses=losses)
            else:
                line = _line(j, {k: v for k, v in metrics.items() if k in LOSS_KEYS})
                if line != last:
                    typer.echo(line)
                    last = line
            if JobStatus(j.status) in TERMINAL:
                break
            time.sleep(POLL_SECONDS)
    finally:
        if tty:
            progress.stop()
    if j.error:
        typer.echo(f"error: {j.error}", err=True)
    samples = [a for a in s.artifacts(j.id) if a.kind == "samples"]
    if samples:
        typer.echo(f"samples: {samples[-1].path}")
    typer.echo(f"{short(j.id)} {j.status} at step {j.step}/{j.total_steps}")
    raise typer.Exit(0 if j.status == JobStatus.succeeded.value else 1)


def _follow_json(s, job_id: str) -> None:
    """`follow --json`: a line per change of status, step or losses; the last one is final."""
    last = None
    while True:
        j = s.get_job(job_id)
        state = {"id": j.id, "status": j.status.value, "step": j.step, "total_steps": j.total_steps,
                 "metrics": s.latest_metrics(j.id)}
        done = JobStatus(j.status) in TERMINAL
        if done:
            samples = [a.path for a in s.artifacts(j.id) if a.kind == "samples"]
            state.update(error=j.error, samples=samples[-1] if samples else None)
        if state != last:
            typer.echo(json.dumps(state))
            last = state
        if done:
            raise typer.Exit(0 if j.status == JobStatus.succeeded else 1)
        time.sleep(POLL_SECONDS)


def metrics(
    job: Annotated[str, typer.Argument(help="job id or unique prefix")],
    json_: Annotated[bool, typer.Option("--json", help="every row as JSON")] = False,
    csv_: Annotated[bool, typer.Option("--csv", help="one row per step, one column per key")] = False,
    plot: Annotated[str, typer.Option("--plot", help="write loss and evaluation curves to this PNG")] = "",
) -> None:
    """The metrics a job recorded, step by step (or as curves, with --plot)."""
    if json_ and csv_:
        raise UsageError("--json and --csv are exclusive; pick one")
    s = store()
    j = s.find_job(job)
    if plot:
        from gand.evaluation.plots import plot_job

        made = plot_job(s, j, plot)
        if json_:
            print_json(made)
        else:
            typer.echo(f"plot: {made['plot']}")
        return
    rows = s.metrics(j.id)
    if json_:
        print_json([{"step": m.step, "key": m.key, "value": m.value, "time": m.time.isoformat()}
                    for m in rows])
        return
    keys = sorted({m.key for m in rows})
    by_step: dict[int, dict[str, float]] = {}
    for m in rows:
        by_step.setdefault(m.step, {})[m.key] = m.value
    if csv_:
        w = csv.writer(sys.stdout)
        w.writerow(["step"] + keys)
        for step in sorted(by_step):
            w.writerow([step] + [by_step[step].get(k, "") for k in keys])
        return
    if not rows:
        typer.echo(f"job {short(j.id)} has no metrics yet")
        return
    steps = sorted(by_step)
    # A readable summary: about 20 evenly spaced steps, always the last.
    pick = sorted(set(steps[:: max(1, len(steps) // 20)] + [steps[-1]]))
    typer.echo(f"{'step':>8}  " + "  ".join(f"{k:>12}" for k in keys))
    for step in pick:
        vals = by_step[step]
        typer.echo(f"{step:>8}  " + "  ".join(f"{vals[k]:>12.5g}" if k in vals else f"{'':>12}" for k in keys))


def register(app: typer.Typer) -> None:
    app.command("follow")(follow)
    app.command("metrics")(metrics)
