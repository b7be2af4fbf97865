"""The plugin manager: loads the `gand` entry points one at a time and indexes what they add.

A plugin that fails to import is recorded and skipped, never fatal for the others. Nothing in
the core names a concrete variant, loss or dataset: they all arrive through these hooks.
"""
from __future__ import annotations

import importlib.metadata as md
import traceback
from dataclasses import dataclass, field
from typing import Optional

import pluggy

from gand import hookspecs
from gand.errors import NotFound, PluginError, UsageError, one_of

GROUP = "gand"


@dataclass
class PluginInfo:
    name: str                   # entry-point name
    value: str                  # module path it points at
    dist: Optional[str] = None  # distribution that provides it
    version: Optional[str] = None
    error: Optional[str] = None  # why it failed to load, if it did
    registers: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "module": self.value, "package": self.dist,
                "version": self.version, "registers": self.registers, "error": self.error}


KINDS = {"variants": "gand_register_variants", "losses": "gand_register_losses",
         "datasets": "gand_register_datasets", "metrics": "gand_register_metrics"}


def _one(kind: str) -> str:
    """The singular of a KINDS key, for messages ("losses" -> "loss")."""
    return kind[:-2] if kind.endswith("sses") else kind[:-1]


class Registry:
    """What the loaded plugins provide, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager, plugins: list[PluginInfo]):
        self.pm = pm
        self.plugins = plugins
        self.variants: dict[str, type] = {}
        self.losses: dict[str, type] = {}
        self.datasets: dict[str, type] = {}
        self.metrics: dict[str, type] = {}
        self._index()

    def _index(self) -> None:
        owners: dict[tuple[str, str], str] = {}
        for kind, hook_name in KINDS.items():
            table = getattr(self, kind)
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
                for cls in impl.function() or []:
                    name = getattr(cls, "name", None)
                    if not isinstance(name, str) or not name:
                        raise PluginError(f"plugin {plugin_name} registered {_one(kind)} {cls!r} "
                                          f"without a name")
                    if name in table:
                        raise PluginError(f"{_one(kind)} {name!r} is registered by both "
                                          f"{owners[(kind, name)]} and {plugin_name}")
                    table[name] = cls
                    owners[(kind, name)] = plugin_name
                    for info in self.plugins:
                        if info.name == plugin_name:
                            info.registers.setdefault(kind, []).append(name)

    def variant(self, name: str):
        if name not in self.variants:
            raise UsageError(f"unknown variant {name!r}; installed: {one_of(self.variants)}")
        return self.variants[name]()

    def loss_class(self, name: str) -> type:
        if name not in self.losses:
            raise UsageError(f"unknown loss {name!r}; installed: {one_of(self.losses)}")
        return self.losses[name]

    def dataset_type(self, name: str):
        if name not in self.datasets:
            raise NotFound(f"unknown dataset {name!r}; installed: {one_of(self.datasets)}")
        return self.datasets[name]()


def _dist_of(ep: md.EntryPoint) -> tuple[Optional[str], Optional[str]]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def load(allow: tuple[str, ...] = (), extra: tuple = ()) -> Registry:
    """Loads every `gand` entry point (or only those in `allow`), plus `extra` plugin objects.

    `extra` lets tests register small inline plugins in a fresh manager.
    """
    pm = pluggy.PluginManager("gand")
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    seen: set[str] = set()
    for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(ep.name)
        dist, version = _dist_of(ep)
        info = PluginInfo(ep.name, ep.value, dist, version)
        infos.append(info)
        if allow and ep.name not in allow:
            info.error = "not in the GAND_PLUGINS allowlist"
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as e:  # a broken plugin must not take the others down
            last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
            where = f" ({last.filename}:{last.lineno})" if last else ""
            info.error = f"{type(e).__name__}: {e}{where}"
    for i, plugin in enumerate(extra):
        name = getattr(plugin, "__name__", None) or f"extra-{i}"
        pm.register(plugin, name=name)
        infos.append(PluginInfo(name, repr(plugin)))
    return Registry(pm, infos)


_cached: Optional[Registry] = None


def registry() -> Registry:
    """The process-wide registry, loaded on first use with the configured allowlist."""
    global _cached
    if _cached is None:
        from gand import settings
        _cached = load(settings.load().plugins)
    return _cached
