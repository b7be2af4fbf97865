"""Effective configuration: environment, then config file, then built-in defaults.

Three settings decide where gand keeps things: GAND_HOME (run folders, the default database and
the embedded broker), GAND_BROKER_URL and GAND_DATABASE_URL. Each may come from the environment
or from a TOML config file (GAND_CONFIG, else $XDG_CONFIG_HOME/gand/config.toml); `gand config`
shows each value and where it came from.
"""
from __future__ import annotations

import math
import os
import stat
import tomllib
from dataclasses import dataclass
from typing import Optional
from pathlib import Path
from urllib.parse import urlsplit

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
    """The config file's settings; none when it does not exist. Anything else that is wrong
    with it (not a file, unreadable, not UTF-8, not TOML, unknown keys) is a UsageError:
    a config that is silently ignored is worse than one that is refused."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise UsageError(f"config file {path} cannot be read: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        # Checked before opening: reading a FIFO would wait forever for a writer.
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise UsageError(f"config file {path} is {what}; expected a TOML file (set GAND_CONFIG "
                         f"to one, or remove {path})")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(f"config file {path} cannot be read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"config file {path} is not valid UTF-8 (byte {raw[e.start]:#04x} at "
                         f"offset {e.start}); TOML files are UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"config file {path} is not valid TOML: {e}") from None
    unknown = set(data) - set(KEYS)
    if unknown:
        raise UsageError(f"config file {path} has unknown key {sorted(unknown)[0]!r}; "
                         f"valid keys: {', '.join(KEYS)}")
    for key, value in data.items():
        if not isinstance(value, str):
            raise UsageError(f"config file {path}: {key} = {value!r} is invalid; expected a "
                             f"string, e.g. {key} = \"...\"")
    return dict(data)


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
    """The effective settings, each checked here, where every command reads them, so that a bad
    value is one line naming it and its source before any command does anything."""
    s = resolve()
    home = Path(s["home"].value).expanduser().resolve()
    if home.exists() and not home.is_dir():
        raise UsageError(f"home {s['home'].value!r} (from {s['home'].source}) is not a folder; "
                         f"GAND_HOME must name a folder gand may create files in")
    check_broker_url(s["broker_url"])
    from gand.store.connect import parse_url  # SQLAlchemy, which every command loads anyway

    parse_url(s["database_url"].value)
    for read in NUMBERS.values():
        read()
    return Settings(
        home=home,
        broker_url=s["broker_url"].value,
        database_url=s["database_url"].value,
        plugins=tuple(p.strip() for p in s["plugins"].value.split(",") if p.strip()),
        # abspath, not resolve: a host's own mount point (or symlink) is kept as given.
        artifacts=Path(os.path.abspath(Path(s["artifacts"].value).expanduser())),
        artifacts_explicit=s["artifacts"].source != "default",
    )


# Broker URL schemes kombu has a transport for (kombu.transport.TRANSPORT_ALIASES, without
# importing kombu for every command); gand is tested with redis, rediss and filesystem.
BROKER_SCHEMES = ("redis", "rediss", "filesystem", "memory", "amqp", "amqps", "pyamqp",
                  "librabbitmq", "sentinel", "sqs", "qpid", "mongodb", "zookeeper", "consul",
                  "etcd", "sqla", "sqlalchemy", "azureservicebus", "azurestoragequeues",
                  "gcpubsub", "confluentkafka", "kafka", "pyro", "slmq", "pgmq")


def check_broker_url(setting: Setting) -> None:
    """Refuses a broker URL kombu could not use (unknown transport, bad port or database)."""
    from gand.store.connect import redact

    url = setting.value
    shown = redact(url)
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in BROKER_SCHEMES:
        raise UsageError(f"broker URL {shown!r} (from {setting.source}) is invalid: unknown "
                         f"transport {scheme!r}; use redis://HOST:PORT/DB, rediss://... or "
                         f"filesystem://")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise UsageError(f"broker URL {shown!r} (from {setting.source}) is invalid: the port "
                         f"must be a number from 0 to 65535") from None
    if scheme.lower() in ("redis", "rediss"):
        db = parts.path.strip("/")
        if db and not (db.isdigit() and int(db) < 2**31):
            raise UsageError(f"broker URL {shown!r} (from {setting.source}) is invalid: the "
                             f"Redis database {db!r} must be a number, e.g. redis://HOST:6379/0")


def number(env: str, default: float, low: float, high: float, unit: str = "seconds") -> float:
    """A numeric setting from the environment, checked to lie in [low, high]."""
    raw = os.environ.get(env)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise UsageError(f"{env}={raw!r} is invalid; expected a number of {unit} from {low:g} "
                         f"to {high:g}")
    return value


def lease_seconds() -> float:
    """GAND_LEASE_SECONDS: a dead worker's job is found within about 1.5 of these."""
    return number("GAND_LEASE_SECONDS", 30.0, 0.5, 86_400)


def stall_seconds() -> float:
    """GAND_STALL_SECONDS: no step and no long work this long means the job's loop hung."""
    return number("GAND_STALL_SECONDS", 900.0, 1, 7 * 86_400)


def broker_timeout() -> float:
    """GAND_BROKER_TIMEOUT: how long a worker tries to reach its broker before giving up."""
    return number("GAND_BROKER_TIMEOUT", 60.0, 1, 86_400)


def max_image_pixels() -> int:
    """GAND_MAX_IMAGE_PIXELS: larger images are refused before they are decoded (a
    decompression bomb would otherwise allocate tens of GB)."""
    return int(number("GAND_MAX_IMAGE_PIXELS", 64_000_000, 1, 2**40, unit="pixels"))


def debug() -> bool:
    """GAND_DEBUG=1: the CLI shows full tracebacks, for developers."""
    return os.environ.get("GAND_DEBUG", "").strip() not in ("", "0")


NUMBERS = {"GAND_LEASE_SECONDS": lease_seconds, "GAND_STALL_SECONDS": stall_seconds,
           "GAND_BROKER_TIMEOUT": broker_timeout, "GAND_MAX_IMAGE_PIXELS": max_image_pixels}
