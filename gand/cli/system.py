"""Commands about the installation: worker, workers, plugins, config."""
from __future__ import annotations

from typing import Annotated

import typer

from gand import settings as settings_mod
from gand.cli.context import print_json, registry
from gand.errors import UsageError


def worker(
    queues: Annotated[str, typer.Option(help="comma-separated queues to take jobs from")] = "gand",
    concurrency: Annotated[int, typer.Option(help="jobs run side by side (one process each)")] = 1,
    burst: Annotated[bool, typer.Option("--burst", help="exit once the queues are empty")] = False,
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Run a worker that takes jobs from the queue and trains them."""
    from gand.jobs.config import QUEUE_RE

    names = [q.strip() for q in queues.split(",") if q.strip()]
    if not names or any(not QUEUE_RE.match(q) for q in names):
        raise UsageError(f"--queues {queues!r} is invalid; expected comma-separated queue names")
    if not 1 <= concurrency <= 64:
        raise UsageError(f"--concurrency {concurrency} is invalid; expected 1 to 64")
    if loglevel.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise UsageError(f"--loglevel {loglevel!r} is invalid; expected DEBUG, INFO, WARNING or ERROR")
    from gand_workers import worker as worker_mod

    raise typer.Exit(worker_mod.run(names, concurrency, burst, loglevel.upper()))


def plugins(json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Installed plugins, their versions, what they register and any load error."""
    reg = registry()
    if json_:
        print_json([p.to_json() for p in reg.plugins])
        return
    for p in reg.plugins:
        what = "; ".join(f"{k}: {', '.join(v)}" for k, v in p.registers.items()) or "-"
        ver = f"{p.dist} {p.version}" if p.dist else p.value
        typer.echo(f"{p.name:18} {ver:22} {what}" + (f"  ERROR: {p.error}" if p.error else ""))


def config(json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """The effective settings and where each came from."""
    from gand.queue import redact

    settings_mod.load()  # a bad value is refused here too, naming where it came from
    values = settings_mod.resolve()
    rows = {k: {"value": redact(v.value) if k.endswith("_url") else v.value, "source": v.source}
            for k, v in values.items()}
    rows["config_file"] = {"value": str(settings_mod.config_path()), "source": "GAND_CONFIG or XDG"}
    if json_:
        print_json(rows)
        return
    for k, v in rows.items():
        typer.echo(f"{k:13} {v['value']}    ({v['source']})")


def workers(
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for idle workers to answer")] = 2.0,
) -> None:
    """Live workers: idle ones answer a broadcast ping, busy ones hold a job's lease."""
    from gand.cli.context import jobs

    if not 0 < timeout <= 60:
        raise UsageError(f"--timeout {timeout} is invalid; expected 0 < seconds ≤ 60")
    out = jobs().workers(timeout)
    if json_:
        print_json(out)
        return
    if not out:
        typer.echo("no live workers")
    for r in out:
        typer.echo(f"{r['worker']:32} {r['state']:5} " + (f"job {r['job'][:12]} step {r['step']}" if r["job"] else ""))


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("workers")(workers)
    app.command("plugins")(plugins)
    app.command("config")(config)
