"""`gand ui`: the web dashboard (gand.ui), served from this process until Ctrl-C."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from gand.cli.context import err, jobs


def ui(
    host: Annotated[str, typer.Option(help="address to listen on; the default serves this "
                                           "machine only (use an SSH tunnel from elsewhere)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free port)")] = 8765,
    read_only: Annotated[bool, typer.Option("--read-only", help="refuse every action "
                                                                "(cancel, resume)")] = False,
    token: Annotated[Optional[str], typer.Option(
        envvar="GAND_UI_TOKEN", show_default=False,
        help="token that actions need (default: a new random one, printed)")] = None,
) -> None:
    """Serve a live dashboard of jobs, curves, sample grids and workers in the browser."""
    from gand.ui.server import Listening, serve

    def ready(at: Listening) -> None:
        typer.echo(f"gand ui: serving {at.url}" + ("  (read-only)" if at.read_only else ""),
                   err=False)
        if not at.read_only:
            source = "generated; set GAND_UI_TOKEN to choose it" if at.token_generated \
                else "from GAND_UI_TOKEN"
            typer.echo(f"gand ui: actions (cancel, resume) need the token {at.token} ({source});"
                       f" open {at.url}?token={at.token} once to keep it in this browser")
        if not at.loopback:
            err(f"gand ui: warning: listening on {host}: anyone who can reach it can read every "
                f"job; prefer the default 127.0.0.1 and an SSH tunnel")
        typer.echo("gand ui: Ctrl-C stops it")

    serve(jobs(), host=host, port=port, read_only=read_only, token=token, on_ready=ready)


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)
