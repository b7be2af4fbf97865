"""Operator commands: `gand reap` recovers jobs whose worker died, now rather than in a few seconds."""
from __future__ import annotations

import socket
from typing import Annotated

import typer

from gand.cli.context import jobs, print_json, short


def reap(json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Requeue jobs whose worker stopped renewing its lease (workers also do this by themselves)."""
    done = jobs().reap(f"gand-reap@{socket.gethostname()}")
    if json_:
        print_json([r.to_json() for r in done])
        return
    if not done:
        typer.echo("no expired leases")
    for r in done:
        typer.echo(f"{short(r.job)}  {r.action:10}  {r.reason}")


def register(app: typer.Typer) -> None:
    app.command("reap")(reap)
