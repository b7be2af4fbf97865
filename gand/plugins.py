"""The plugin manager: loads the `gand` entry points one at a time, checks what each registers,
and indexes what passes.

Plugins are checked as they load, the way pytest checks its own: a plugin that fails to import,
implements a hook that does not exist (a misspelt `gand_register_loss`), registers something
that is not a subclass of the right gand.api class, declares an option whose default breaks its
own rules, or takes a name another plugin registers, is reported in one line and left out;
every other plugin keeps working. `gand plugins` shows each report, and `gand plugins --check`
fails when there is one. Nothing in the core names a concrete variant, loss or dataset.
"""
from __future__ import annotations

import importlib.metadata as md
import inspect
import traceback
from dataclasses import dataclass, field
from typing import Any, Optional

import pluggy

from gand import api, hookspecs
from gand.errors import NotFound, UsageError, one_of

GROUP = "gand"


@dataclass
class PluginInfo:
    name: str                   # entry-point name
    value: str                  # module path it points at
    dist: Optional[str] = None  # distribution that provides it
    version: Optional[str] = None
    error: Optional[str] = None  # why it is not loaded, if it is not
    # Problems that leave the plugin loaded (an option clash between a variant and a loss).
    warnings: list[str] = field(default_factory=list)
    registers: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "module": self.value, "package": self.dist,
                "version": self.version, "registers": self.registers, "error": self.error,
                "warnings": list(self.warnings)}


KINDS = {"variants": "gand_register_variants", "losses": "gand_register_losses",
         "datasets": "gand_register_datasets", "metrics": "gand_register_metrics"}
# What each registration hook must return a list of (subclasses, never instances).
BASES: dict[str, tuple[type, ...]] = {
    "variants": (api.Variant,), "losses": (api.Loss, api.Regularizer),
    "datasets": (api.DatasetType,), "metrics": (api.Metric,)}


def _one(kind: str) -> str:
    """The singular of a KINDS key, for messages ("losses" -> "loss")."""
    return kind[:-2] if kind.endswith("sses") else kind[:-1]


class PluginProblem(Exception):
    """What is wrong with one plugin, in one line."""


class Registry:
    """What the loaded plugins provide, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager, plugins: list[PluginInfo],
                 registered: dict[str, dict[str, list[type]]]):
        self.pm = pm
        self.plugins = plugins
        self.variants: dict[str, type] = {}
        self.losses: dict[str, type] = {}
        self.datasets: dict[str, type] = {}
        self.metrics: dict[str, type] = {}
        self._index(registered)

    def _index(self, registered: dict[str, dict[str, list[type]]]) -> None:
        """Indexes each plugin's classes; two plugins that claim one name are both left out."""
        owners: dict[tuple[str, str], str] = {}
        clashes: dict[str, str] = {}
        for plugin, kinds in registered.items():
            for kind, classes in kinds.items():
                for cls in classes:
                    other = owners.setdefault((kind, cls.name), plugin)
                    if other != plugin:
                        why = f"{_one(kind)} {cls.name!r} is registered by both {other} and {plugin}"
                        clashes.setdefault(other, why)
                        clashes.setdefault(plugin, why)
        by_name = {p.name: p for p in self.plugins}
        for plugin, why in clashes.items():
            self._disable(by_name[plugin], why)
        for plugin, kinds in registered.items():
            if plugin in clashes:
                continue
            for kind, classes in kinds.items():
                for cls in classes:
                    getattr(self, kind)[cls.name] = cls
                    by_name[plugin].registers.setdefault(kind, []).append(cls.name)
        self._check_option_clashes(registered, by_name)

    def _disable(self, info: PluginInfo, why: str) -> None:
        info.error, info.registers = why, {}
        plugin = self.pm.get_plugin(info.name)
        if plugin is not None:
            self.pm.unregister(plugin)

    def _check_option_clashes(self, registered, by_name: dict[str, "PluginInfo"]) -> None:
        """A variant and a loss declaring one option would share one `--set` key: report it on
        both plugins (each still loads; a job combining the two is refused at submit)."""
        owner = {cls: plugin for plugin, kinds in registered.items()
                 for classes in kinds.values() for cls in classes}
        for v in self.variants.values():
            for loss in self.losses.values():
                for key in sorted(set(v.options) & set(loss.options)):
                    why = (f"option {key!r} is declared by both variant {v.name} "
                           f"({owner[v]}) and loss {loss.name} ({owner[loss]})")
                    for plugin in {owner[v], owner[loss]}:
                        if why not in by_name[plugin].warnings:
                            by_name[plugin].warnings.append(why)

    def problems(self) -> list[tuple[str, str]]:
        """(plugin, problem) for every plugin left out or loaded with a warning."""
        out = [(p.name, p.error) for p in self.plugins
               if p.error and p.error != NOT_ALLOWED]
        return out + [(p.name, w) for p in self.plugins for w in p.warnings]

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


NOT_ALLOWED = "not in the GAND_PLUGINS allowlist"


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
    registered: dict[str, dict[str, list[type]]] = {}
    seen: set[str] = set()
    for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(ep.name)
        dist, version = _dist_of(ep)
        info = PluginInfo(ep.name, ep.value, dist, version)
        infos.append(info)
        if allow and ep.name not in allow:
            info.error = NOT_ALLOWED
            continue
        try:
            plugin = ep.load()
        except Exception as e:  # a broken plugin must not take the others down
            last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
            where = f" ({last.filename}:{last.lineno})" if last else ""
            info.error = f"{type(e).__name__}: {e}{where}"
            continue
        _admit(pm, info, plugin, registered)
    for i, plugin in enumerate(extra):
        name = getattr(plugin, "__name__", None) or f"extra-{i}"
        info = PluginInfo(name, repr(plugin))
        infos.append(info)
        _admit(pm, info, plugin, registered)
    return Registry(pm, infos, registered)


def _admit(pm: pluggy.PluginManager, info: PluginInfo, plugin: Any,
           registered: dict[str, dict[str, list[type]]]) -> None:
    """Registers one plugin and checks it; a plugin with a problem is unregistered again."""
    try:
        pm.register(plugin, name=info.name)
    except Exception as e:  # pluggy refuses a hook implementation with a bad signature
        info.error = f"{type(e).__name__}: {e}"
        return
    try:
        _check_hooks(pm, info.name)
        registered[info.name] = _registrations(pm, info.name, plugin)
    except PluginProblem as e:
        info.error = str(e)
        pm.unregister(plugin)


def _check_hooks(pm: pluggy.PluginManager, name: str) -> None:
    """Refuses an implementation of a hook that gand does not have (a misspelling, usually)."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        # Checked after each registration, so the unknown hook is this plugin's.
        hooks = sorted(h for h, caller in vars(pm.hook).items()
                       if caller.spec is None and any(i.plugin_name == name
                                                      for i in caller.get_hookimpls()))
        known = sorted(KINDS.values())
        raise PluginProblem(f"implements unknown hook {hooks[0] if hooks else e}; gand's hooks: "
                            f"{one_of(known)}") from None


def _registrations(pm: pluggy.PluginManager, name: str, plugin: Any) -> dict[str, list[type]]:
    """What this plugin's registration hooks return, each item checked."""
    out: dict[str, list[type]] = {}
    for kind, hook_name in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if impl.plugin is not plugin:
                continue
            try:
                result = impl.function()
            except Exception as e:
                raise PluginProblem(f"{hook_name} raised {type(e).__name__}: {e}") from None
            if not isinstance(result, (list, tuple)):
                raise PluginProblem(f"{hook_name} returned {type(result).__name__}; expected a "
                                    f"list of classes")
            for cls in result:
                _check_class(kind, hook_name, cls)
                out.setdefault(kind, []).append(cls)
    return out


def _check_class(kind: str, hook_name: str, cls: Any) -> None:
    bases = BASES[kind]
    wanted = " or ".join(f"gand.api.{b.__name__}" for b in bases)
    if not isinstance(cls, type):
        raise PluginProblem(f"{hook_name} returned an instance of {type(cls).__name__}; "
                            f"register the class itself (a subclass of {wanted})")
    if not issubclass(cls, bases):
        raise PluginProblem(f"{hook_name} returned {cls.__name__}, which is not a subclass of "
                            f"{wanted}")
    name = getattr(cls, "name", None)  # a class attribute the subclass must set
    if not isinstance(name, str) or not name:
        raise PluginProblem(f"registered {_one(kind)} {cls!r} without a name")
    for key, option in getattr(cls, "options", {}).items():
        _check_option(f"{_one(kind)} {name}", key, option)
    if kind in ("variants", "losses"):
        _check_engine_options(_one(kind), cls)
    if kind == "losses":
        _check_loss_signatures(cls)


def _check_option(owner: str, key: str, option: Any) -> None:
    """An Option whose default breaks its own type, choices or bounds would reach a job."""
    if not isinstance(option, api.Option):
        raise PluginProblem(f"{owner} option {key!r} is a {type(option).__name__}, not a "
                            f"gand.api.Option")
    default = option.default
    if option.type is float and isinstance(default, int) and not isinstance(default, bool):
        default = float(default)
    if not isinstance(default, option.type) or (option.type is int and isinstance(default, bool)):
        raise PluginProblem(f"{owner} option {key!r} has default {option.default!r}, which is "
                            f"not a {option.type.__name__}")
    try:
        option.parse(key, default)
    except UsageError as e:
        reason = str(e).split(": ", 1)[-1]
        raise PluginProblem(f"{owner} option {key!r} has default {option.default!r}, which its "
                            f"own rules refuse ({reason})") from None


def _check_loss_signatures(cls: type) -> None:
    """gand calls d_loss/g_loss (and d_penalty) with D, then real=, fake=, ctx= by keyword: a
    method that names them otherwise would fail at a job's first step, so refuse it now."""
    methods = ("d_penalty",) if issubclass(cls, api.Regularizer) else ("d_loss", "g_loss")
    for method in methods:
        params = inspect.signature(getattr(cls, method)).parameters
        missing = [p for p in ("real", "fake", "ctx") if p not in params]
        if missing and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            raise PluginProblem(f"loss {cls.name}: {method} takes no argument {missing[0]!r}; "
                                f"gand calls {method}(D, *, real, fake, ctx)")


def _check_engine_options(kind: str, cls: type) -> None:
    """A variant's or loss's options, and a variant's `defaults`, must fit the engine's options
    (imported late: they need torch, which loading a registry needs anyway)."""
    from gand.engine.options import ENGINE_OPTIONS

    clash = sorted(set(cls.options) & set(ENGINE_OPTIONS))
    if clash:
        raise PluginProblem(f"{kind} {cls.name} redeclares engine option {clash[0]!r}"
                            + ("; set its default through `defaults` instead"
                               if kind == "variant" else ""))
    for key, value in getattr(cls, "defaults", {}).items():
        option = ENGINE_OPTIONS.get(key) or cls.options.get(key)
        if option is None:
            raise PluginProblem(f"variant {cls.name} sets a default for unknown option {key!r}")
        try:
            option.parse(key, value)
        except UsageError as e:
            reason = str(e).split(": ", 1)[-1]
            raise PluginProblem(f"variant {cls.name} sets default {key}={value!r}, which the "
                                f"option refuses ({reason})") from None


_cached: Optional[Registry] = None


def registry() -> Registry:
    """The process-wide registry, loaded on first use with the configured allowlist."""
    global _cached
    if _cached is None:
        from gand import settings
        _cached = load(settings.load().plugins)
    return _cached
