"""The `gand` command: every command group joined in one place, and the one error policy.

A GandError (a user mistake or an unavailable service) becomes one line on stderr and a non-zero
exit code, never a traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys

import typer

try:  # typer ≥ 0.20 vendors click; older releases use click itself
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from gand.cli import data, evaluate, export, jobs, ops, outputs, system, translate, ui, watch
from gand.errors import GandError

app = typer.Typer(name="gand", help="A GAN training daemon: submit, watch, cancel, compare, resume.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

for module in (jobs, watch, outputs, export, system, data, ops, translate, evaluate, ui):
    module.register(app)


def main(argv: list[str] | None = None) -> None:
    try:
        rc = app(args=argv, standalone_mode=False, prog_name="gand")
    except GandError as e:
        print(f"gand: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click_exc.NoArgsIsHelpError:
        sys.exit(0)  # the help has been shown
    except click_exc.ClickException as e:
        # Click's usage errors, condensed to one line that names the bad value.
        print(f"gand: error: {e.format_message()}{_given(e, argv)}", file=sys.stderr)
        sys.exit(e.exit_code or 2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("gand: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


def _given(e: Exception, argv: list[str] | None) -> str:
    """", got 'ten'" for a bad option value, which click's message does not quote."""
    param = getattr(e, "param", None)
    if not isinstance(e, click_exc.BadParameter) or param is None:
        return ""
    args = sys.argv[1:] if argv is None else argv
    for i, a in enumerate(args):
        for opt in getattr(param, "opts", []):
            if a == opt and i + 1 < len(args):
                return f" (got {args[i + 1]!r})"
            if a.startswith(opt + "="):
                return f" (got {a.split('=', 1)[1]!r})"
    return ""
