"""Lazily opened resources shared by CLI commands, and output helpers.

Commands reach jobs through the job service (gand.jobs.service); nothing here imports torch or
the plugins until a command asks for the registry, which keeps read-only commands fast.
"""
from __future__ import annotations

import json
import sys
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import typer

from gand import settings as settings_mod
from gand.jobs.service import JobService, short  # noqa: F401  (short: re-exported for commands)
from gand.store import Store

if TYPE_CHECKING:
    from gand.plugins import Registry


@lru_cache(maxsize=1)
def settings() -> settings_mod.Settings:
    return settings_mod.load()


@lru_cache(maxsize=1)
def jobs() -> JobService:
    return JobService(settings())


def store() -> Store:
    return jobs().store


def registry() -> "Registry":
    from gand import plugins

    return plugins.registry()


def reset() -> None:
    """Forgets the cached settings and service (tests run many commands in one process)."""
    if jobs.cache_info().currsize:
        jobs().close()
    jobs.cache_clear()
    settings.cache_clear()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def err(msg: str) -> None:
    print(msg, file=sys.stderr)
