"""`gand ui`: the web dashboard (gand.ui), served from this process until Ctrl-C."""
from __future__ import annotations

import os
from typing import Annotated

import typer

from gand.cli.context import err, jobs


def ui(
    host: Annotated[str, typer.Option(help="address to listen on; the default serves this "
                                           "machine only (use an SSH tunnel from elsewhere)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free port)")] = 8765,
    read_only: Annotated[bool, typer.Option("--read-only", help="refuse every action "
                                                                "(cancel, resume)")] = False,
) -> None:
    """Serve a live dashboard of jobs, curves, sample grids and workers in the browser.

    Actions (cancel, resume) need a token: GAND_UI_TOKEN, else a random one printed here. It is
    read from the environment only, never from the command line, where `ps` would show it."""
    from gand.ui.server import Listening, serve

    token = os.environ.get("GAND_UI_TOKEN") or None

    def ready(at: Listening) -> None:
        typer.echo(f"gand ui: serving {at.url}" + ("  (read-only)" if at.read_only else ""),
                   err=False)
        if at.read_only:
            pass
        elif at.token_generated:
            typer.echo(f"gand ui: actions (cancel, resume) need the token {at.token} (generated;"
                       f" set GAND_UI_TOKEN to choose it); open {at.url}?token={at.token} once "
                       f"to keep it in this browser")
        else:  # the user's own secret: not echoed into logs
            typer.echo("gand ui: actions (cancel, resume) need the token in GAND_UI_TOKEN")
        if not at.loopback:
            err(f"gand ui: warning: listening on {host}: anyone who can reach it can read every "
                f"job; prefer the default 127.0.0.1 and an SSH tunnel")
        typer.echo("gand ui: Ctrl-C stops it")

    serve(jobs(), host=host, port=port, read_only=read_only, token=token, on_ready=ready)


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)
