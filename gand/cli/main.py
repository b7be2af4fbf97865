"""The `gand` command: every command group joined in one place, and the one error policy.

A GandError (a user mistake or an unavailable service) becomes one line on stderr and a non-zero
exit code, never a traceback. Anything else is a bug in gand or a plugin: it too is one line,
naming the exception and how to see more, with exit code 70 (EX_SOFTWARE). GAND_DEBUG=1 shows
the full traceback of either, for developers.
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
from gand.settings import debug

EX_SOFTWARE = 70  # sysexits.h: an internal error

app = typer.Typer(name="gand", help="A GAN training daemon: submit, watch, cancel, compare, resume.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

for module in (jobs, watch, outputs, export, system, data, ops, translate, evaluate, ui):
    module.register(app)


def main(argv: list[str] | None = None) -> None:
    try:
        rc = app(args=argv, standalone_mode=False, prog_name="gand")
    except GandError as e:
        if debug():
            raise
        print(f"gand: error: {_one_line(str(e))}", file=sys.stderr)
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
    except Exception as e:  # a bug: still one line for the user, the traceback on request
        if debug():
            raise
        print(f"gand: internal error: {type(e).__name__}: {_one_line(str(e))} (a bug in gand "
              f"or a plugin; GAND_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(EX_SOFTWARE)
    sys.exit(rc if isinstance(rc, int) else 0)


def _one_line(text: str) -> str:
    """A message on one line, whatever a driver or library put in it."""
    return " ".join(text.split())


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
