"""The `gand` command: every command group joined in one place, and the one error policy.

A GandError (a user mistake or an unavailable service) becomes one line on stderr and a non-zero
exit code, never a traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys

import click
import typer

from gand.cli import jobs, outputs, system, watch
from gand.errors import GandError

app = typer.Typer(name="gand", help="A GAN training daemon: submit, watch, cancel, compare, resume.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

for module in (jobs, watch, outputs, system):
    module.register(app)


def main(argv: list[str] | None = None) -> None:
    try:
        rc = app(args=argv, standalone_mode=False, prog_name="gand")
    except GandError as e:
        print(f"gand: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click.exceptions.NoArgsIsHelpError as e:
        print(e.ctx.get_help() if e.ctx else str(e))
        sys.exit(0)
    except click.ClickException as e:
        # Click's usage errors, condensed to one line that names the bad value.
        print(f"gand: error: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code or 2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        print("gand: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)
