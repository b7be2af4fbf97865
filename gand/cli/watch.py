"""Commands that watch training: follow (live) and metrics (history)."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from gand.cli.context import jobs, print_json, short, store
from gand.cli.paths import output_file, writing
from gand.errors import UsageError
from gand.jobs.pace import THROUGHPUT_KEY

LOSS_KEYS = ("d_loss", "g_loss")


def _line(state: dict) -> str:
    metrics = state["metrics"]
    parts = [f"{k}={metrics[k]:.4g}" for k in LOSS_KEYS if k in metrics]
    return f"{state['status']:10} step {state['step']}/{state['total_steps']}  " + "  ".join(parts)


def follow(
    job: Annotated[str, typer.Argument(help="job id or unique prefix")],
    json_: Annotated[bool, typer.Option("--json", help="one JSON object per change (JSON Lines)")] = False,
) -> None:
    """Show progress and losses live until the job ends; exit 0 only if it succeeded.

    With --json, one JSON object per change (JSON Lines); the last one is the final state."""
    state: dict = {}
    progress = None
    last = None
    try:
        for state in jobs().follow(job):
            if json_:
                typer.echo(json.dumps(state))
            elif sys.stdout.isatty():
                progress = progress or _Bar(state)
                progress.update(state)
            else:
                line = _line(state)
                if line != last:
                    typer.echo(line)
                    last = line
    finally:
        if progress is not None:
            progress.stop()
    if not json_:
        if state.get("error"):
            typer.echo(f"error: {state['error']}", err=True)
        if state.get("samples"):
            typer.echo(f"samples: {state['samples']}")
        typer.echo(f"{short(state['id'])} {state['status']} at step "
                   f"{state['step']}/{state['total_steps']}")
    raise typer.Exit(0 if state.get("status") == "succeeded" else 1)


class _Bar:
    """A rich progress bar for a terminal: step/total, elapsed time, time left (from the
    trainer's img/s), img/s and the latest losses."""

    def __init__(self, state: dict):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"),
                                 TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                                 TextColumn("{task.fields[rate]}"),
                                 TextColumn("{task.fields[losses]}"))
        self.progress.start()
        self.task = self.progress.add_task(short(state["id"]), total=state["total_steps"],
                                           eta="", rate="", losses="")

    def update(self, state: dict) -> None:
        m = state["metrics"]
        self.progress.update(self.task, completed=state["step"], total=state["total_steps"],
                             description=f"{short(state['id'])} {state['status']}",
                             eta=_eta(state), rate=_rate(m),
                             losses="  ".join(f"{k}={m[k]:.4g}" for k in LOSS_KEYS if k in m))

    def stop(self) -> None:
        self.progress.stop()


def _eta(state: dict) -> str:
    """"ETA 1:02:03" while running with a known speed, else nothing."""
    eta = state.get("eta_s")
    if eta is None:
        return ""
    seconds = int(round(eta))
    return f"ETA {seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _rate(metrics: dict) -> str:
    rate = metrics.get(THROUGHPUT_KEY)
    return "" if rate is None or rate != rate else f"{rate:,.0f} img/s"


def metrics(
    job: Annotated[str, typer.Argument(help="job id or unique prefix")],
    json_: Annotated[bool, typer.Option("--json", help="every row as JSON")] = False,
    csv_: Annotated[bool, typer.Option("--csv", help="one row per step, one column per key")] = False,
    plot: Annotated[str, typer.Option("--plot", help="write loss and evaluation curves to this PNG")] = "",
    all_attempts: Annotated[bool, typer.Option("--all-attempts", help="also the rows of attempts "
                                                                      "a resume went back on")] = False,
) -> None:
    """The metrics a job recorded, step by step (or as curves, with --plot)."""
    if json_ and csv_:
        raise UsageError("--json and --csv are exclusive; pick one")
    if plot and Path(plot).suffix.lower() == ".png":
        output_file("--plot", Path(plot))
    s = store()
    j = s.find_job(job)
    if plot:
        from gand.evaluation.plots import plot_job

        with writing("--plot", Path(plot)):
            made = plot_job(s, j, plot)
        if json_:
            print_json(made)
        else:
            typer.echo(f"plot: {made['plot']}")
        return
    rows = s.metrics(j.id, superseded=all_attempts)
    if json_:
        print_json([{"step": m.step, "key": m.key, "value": m.value, "time": m.time.isoformat(),
                     "epoch": m.epoch}
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
