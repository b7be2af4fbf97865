"""Effective configuration: environment, then config file, then built-in defaults.

Three settings decide where gand keeps things: GAND_HOME (run folders, the default database and
the embedded broker), GAND_BROKER_URL and GAND_DATABASE_URL. Each may come from the environment
or from a TOML config file (GAND_CONFIG, else $XDG_CONFIG_HOME/gand/config.toml); `gand config`
shows each value and where it came from.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from typing import Optional
from pathlib import Path

from gand.errors import UsageError

KEYS = ("home", "broker_url", "database_url", "plugins", "inception_weights", "artifacts")
ENV = {"home": "GAND_HOME", "broker_url": "GAND_BROKER_URL",
       "database_url": "GAND_DATABASE_URL", "plugins": "GAND_PLUGINS",
       "inception_weights": "GAND_INCEPTION_WEIGHTS",  # a local file: FID never downloads
       # Checkpoints, samples and evaluations: shared storage (an NFS mount) in a fleet.
       "artifacts": "GAND_ARTIFACTS"}


@dataclass(frozen=True)
class Setting:
    value: str
    source: str  # "env GAND_HOME", "config /path", "default"


def config_path() -> Path:
    if os.environ.get("GAND_CONFIG"):
        return Path(os.environ["GAND_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "gand" / "config.toml"


def _file_values(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"config file {path} is not valid TOML: {e}") from None
    unknown = set(data) - set(KEYS)
    if unknown:
        raise UsageError(f"config file {path} has unknown key {sorted(unknown)[0]!r}; "
                         f"valid keys: {', '.join(KEYS)}")
    return {k: str(v) for k, v in data.items()}


def resolve() -> dict[str, Setting]:
    """Every setting with the place its value came from."""
    path = config_path()
    from_file = _file_values(path)
    out: dict[str, Setting] = {}
    for key in KEYS:
        env = ENV[key]
        if os.environ.get(env):
            out[key] = Setting(os.environ[env], f"env {env}")
        elif key in from_file:
            out[key] = Setting(from_file[key], f"config {path}")
        else:
            out[key] = Setting(_default(key, out), "default")
    return out


def _default(key: str, so_far: dict[str, Setting]) -> str:
    if key == "home":
        return str(Path("~/.gand").expanduser())
    home = Path(so_far["home"].value).expanduser()
    if key == "broker_url":
        # kombu's filesystem transport: one machine, no server, same code path as Redis.
        return "filesystem://"
    if key == "database_url":
        return f"sqlite:///{home / 'gand.db'}"
    if key == "artifacts":
        return str(home)
    return ""  # plugins: empty means every installed plugin


@dataclass(frozen=True)
class Settings:
    home: Path
    broker_url: str
    database_url: str
    plugins: tuple[str, ...]  # allowlist of plugin names; empty = all
    # The root the store's artifact paths are relative to; runs/<job>/ lives under it. Not
    # resolved: each host may mount the shared storage at its own path.
    artifacts: Optional[Path] = None
    artifacts_explicit: bool = False  # set by GAND_ARTIFACTS or the config file

    @property
    def artifacts_root(self) -> Path:
        return self.artifacts or self.home

    @property
    def runs(self) -> Path:
        return self.artifacts_root / "runs"

    def stored_path(self, path: Path) -> str:
        """How a file under the artifacts root is recorded: relative to it, so that any host,
        whatever its mount point, finds it; a file elsewhere is recorded as it is."""
        path = Path(path)
        try:
            return str(path.relative_to(self.artifacts_root))
        except ValueError:
            return str(path)

    def local_path(self, stored: str) -> Path:
        """A recorded path as this host sees it (an absolute one is an older record)."""
        path = Path(stored)
        return path if path.is_absolute() else self.artifacts_root / path

    def check_artifacts(self) -> None:
        """A worker that cannot see (or write) the shared artifacts root says so at once."""
        import os

        root = self.artifacts_root
        if not self.artifacts_explicit:
            root.mkdir(parents=True, exist_ok=True)
        if not root.is_dir():
            raise UsageError(f"artifacts root {root} does not exist on this host; mount the "
                             f"shared storage there or set GAND_ARTIFACTS to where it is mounted")
        if not os.access(root, os.W_OK | os.X_OK):
            raise UsageError(f"artifacts root {root} is not writable on this host")

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"

    def run_dir(self, job_id: str) -> Path:
        return self.runs / job_id


def load() -> Settings:
    s = resolve()
    return Settings(
        home=Path(s["home"].value).expanduser().resolve(),
        broker_url=s["broker_url"].value,
        database_url=s["database_url"].value,
        plugins=tuple(p.strip() for p in s["plugins"].value.split(",") if p.strip()),
        # abspath, not resolve: a host's own mount point (or symlink) is kept as given.
        artifacts=Path(os.path.abspath(Path(s["artifacts"].value).expanduser())),
        artifacts_explicit=s["artifacts"].source != "default",
    )
