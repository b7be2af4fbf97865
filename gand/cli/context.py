"""Lazily opened resources shared by CLI commands, and output helpers."""
from __future__ import annotations

import json
import sys
from functools import lru_cache
from typing import Any

import typer

from gand import plugins, settings as settings_mod
from gand.store import Store


@lru_cache(maxsize=1)
def settings() -> settings_mod.Settings:
    return settings_mod.load()


@lru_cache(maxsize=1)
def store() -> Store:
    return Store(settings().database_url)


def registry() -> plugins.Registry:
    return plugins.registry()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def err(msg: str) -> None:
    print(msg, file=sys.stderr)


def short(job_id: str) -> str:
    return job_id[:12]
