"""The plugin system: hooks called through a fresh plugin manager, duplicates, broken plugins,
the GAND_PLUGINS allowlist, and what `gand plugins` reports.

Inline plugins are small modules built in the test and registered with
`gand.plugins.load(allow=..., extra=(module,))`; a broken plugin is a real throw-away
distribution (a module plus a dist-info folder with an entry point) put on sys.path.
"""
from __future__ import annotations

import inspect
import os
import types
from pathlib import Path
from typing import Optional

import pytest
import torch
from support import fake_dist
from torch import nn

from gand import hookspecs, plugins
from gand.api import DataInfo, DatasetType, FunctionSource, Loss
from gand.engine.adversarial import AdversarialVariant
from gand.errors import UsageError
from gand.hookspecs import hookimpl

NO_ENTRY_POINTS = ("no-such-plugin",)  # an allowlist that admits none of the installed plugins


def inline_plugin(name: str, **hooks: list) -> types.ModuleType:
    """A plugin module named `name` whose hooks `hook=[classes]` return those classes."""
    module = types.ModuleType(name)
    for hook, classes in hooks.items():
        def impl(_classes=tuple(classes)) -> list:
            return list(_classes)
        # pluggy ignores arguments with defaults, so the closure's default is invisible to it.
        setattr(module, hook, hookimpl(impl))
    return module


# ---------------------------------------------------------------------------------------------
# One small class of each kind a registration hook accepts.


class InlineVariant(AdversarialVariant):
    name = "inline-variant"
    data_kinds = frozenset({"vector"})

    def networks(self, info, options):
        return nn.Linear(1, 2), nn.Linear(2, 1)


class InlineLoss(Loss):
    name = "inline-loss"

    def d_loss(self, D, *, real, fake, ctx):
        return D(fake).mean() - D(real).mean(), {}

    def g_loss(self, D, *, real, fake, ctx):
        return -D(fake).mean(), {}


class InlineDataset(DatasetType):
    name = "inline-data"

    def describe(self, arg: Optional[str]) -> DataInfo:
        return DataInfo(spec=self.name, kind="vector", shape=(2,))

    def load(self, arg, info, shape, device):
        return FunctionSource(info, lambda n, dev: (torch.zeros(n, 2, device=dev), None), device)


def _inline_metric() -> type:
    from gand.api import Metric

    class InlineMetric(Metric):
        name = "inline-metric"
        directions = {"inline-metric": "min"}
        headline = "inline-metric"

        def compute(self, ctx) -> dict[str, float]:
            return {"inline-metric": 0.0}

    return InlineMetric


# Every hook in gand/hookspecs.py, with the Registry table it fills and an example to register.
# A hook added to hookspecs.py without an entry here fails test_every_hook_has_a_test.
EXAMPLES = {
    "gand_register_variants": ("variants", lambda: InlineVariant),
    "gand_register_losses": ("losses", lambda: InlineLoss),
    "gand_register_datasets": ("datasets", lambda: InlineDataset),
    "gand_register_metrics": ("metrics", _inline_metric),
}


def hook_names() -> set[str]:
    return {name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, "gand_spec")}


def test_every_hook_has_a_test():
    assert hook_names() == set(EXAMPLES), "a hook in gand/hookspecs.py has no example in EXAMPLES"


@pytest.mark.parametrize("hook", sorted(EXAMPLES))
def test_inline_plugin_is_called_through_the_manager(hook):
    table, example = EXAMPLES[hook]
    cls = example()
    reg = plugins.load(allow=NO_ENTRY_POINTS, extra=(inline_plugin("inline", **{hook: [cls]}),))
    # Through pluggy's hook caller: one list per implementing plugin.
    assert getattr(reg.pm.hook, hook)() == [[cls]]
    assert getattr(reg, table) == {cls.name: cls}
    info = next(p for p in reg.plugins if p.name == "inline")
    assert info.registers == {table: [cls.name]} and info.error is None


@pytest.mark.parametrize("hook", sorted(EXAMPLES))
def test_installed_plugins_answer_every_hook(hook):
    """The real entry points, called through the manager, give exactly what the registry indexed."""
    table, _ = EXAMPLES[hook]
    reg = plugins.load()
    names = [cls.name for result in getattr(reg.pm.hook, hook)() for cls in result]
    assert sorted(names) == sorted(getattr(reg, table))
    if table != "metrics":  # the first-party plugins register variants, losses and datasets
        assert names


def test_registry_builds_what_inline_plugins_register():
    plugin = inline_plugin("inline", gand_register_variants=[InlineVariant],
                           gand_register_losses=[InlineLoss],
                           gand_register_datasets=[InlineDataset])
    reg = plugins.load(allow=NO_ENTRY_POINTS, extra=(plugin,))
    assert isinstance(reg.variant("inline-variant"), InlineVariant)
    assert reg.loss_class("inline-loss") is InlineLoss
    info = reg.dataset_type("inline-data").describe(None)
    assert info.kind == "vector" and info.shape == (2,)
    with pytest.raises(UsageError, match="unknown variant 'gan'; installed: inline-variant"):
        reg.variant("gan")


@pytest.mark.parametrize("hook", ["gand_register_variants", "gand_register_losses",
                                  "gand_register_datasets"])
def test_a_name_registered_twice_leaves_out_both_plugins_only(hook):
    table, example = EXAMPLES[hook]
    cls = example()
    twin = type(cls.__name__ + "Twin", (cls,), {})  # another class under the same name
    first, second = inline_plugin("alpha", **{hook: [cls]}), inline_plugin("beta", **{hook: [twin]})
    bystander = inline_plugin("gamma", gand_register_metrics=[_inline_metric()])
    reg = plugins.load(allow=NO_ENTRY_POINTS, extra=(first, second, bystander))
    kind = {"variants": "variant", "losses": "loss", "datasets": "dataset"}[table]
    why = f"{kind} {cls.name!r} is registered by both alpha and beta"
    errors = {p.name: p.error for p in reg.plugins if p.error != plugins.NOT_ALLOWED}
    assert errors == {"alpha": why, "beta": why, "gamma": None}
    assert getattr(reg, table) == {} and "inline-metric" in reg.metrics
    assert getattr(reg.pm.hook, hook)() == []  # neither is called any more


def test_a_name_taken_by_an_installed_plugin_leaves_out_both():
    impostor = type("Impostor", (InlineVariant,), {"name": "gan"})
    reg = plugins.load(allow=("gan", "dcgan"), extra=(inline_plugin(
        "impostor", gand_register_variants=[impostor]),))
    why = "variant 'gan' is registered by both gan and impostor"
    assert {p.name: p.error for p in reg.plugins if p.name in ("gan", "impostor")} == {
        "gan": why, "impostor": why}
    assert set(reg.variants) == {"dcgan"}


def test_a_registration_without_a_name_is_reported():
    nameless = type("Nameless", (InlineLoss,), {"name": ""})
    reg = plugins.load(allow=NO_ENTRY_POINTS,
                       extra=(inline_plugin("sloppy", gand_register_losses=[nameless]),))
    info = next(p for p in reg.plugins if p.name == "sloppy")
    assert "registered loss" in info.error and "Nameless" in info.error
    assert "without a name" in info.error and reg.losses == {}


# Each of these plugins has one mistake an author makes; `gand plugins` reports it in one line,
# and every other plugin keeps working.
BAD_PLUGINS = {
    "default-below-min": ("""
        from gand.api import Option
        from gand.engine.adversarial import AdversarialVariant
        from gand.hookspecs import hookimpl

        class Picky(AdversarialVariant):
            name = "picky"
            options = {"temperature": Option(float, 0.0, "a knob", min=0.1)}
            def networks(self, info, options): ...

        @hookimpl
        def gand_register_variants():
            return [Picky]
        """, "variant picky option 'temperature' has default 0.0, which its own rules refuse"
             " (must be at least 0.1)"),
    "default-wrong-type": ("""
        from gand.api import Loss, Option
        from gand.hookspecs import hookimpl

        class Wordy(Loss):
            name = "wordy"
            options = {"repeats": Option(int, "three", "how often")}
            def d_loss(self, D, *, real, fake, ctx): ...
            def g_loss(self, D, *, real, fake, ctx): ...

        @hookimpl
        def gand_register_losses():
            return [Wordy]
        """, "loss wordy option 'repeats' has default 'three', which is not a int"),
    "misspelt-hook": ("""
        from gand.api import Loss
        from gand.hookspecs import hookimpl

        class Typo(Loss):
            name = "typo"
            def d_loss(self, D, *, real, fake, ctx): ...
            def g_loss(self, D, *, real, fake, ctx): ...

        @hookimpl
        def gand_register_loss():
            return [Typo]
        """, "implements unknown hook gand_register_loss; gand's hooks: gand_register_datasets,"),
    "an-instance": ("""
        from gand.api import Loss
        from gand.hookspecs import hookimpl

        class Eager(Loss):
            name = "eager"
            def d_loss(self, D, *, real, fake, ctx): ...
            def g_loss(self, D, *, real, fake, ctx): ...

        @hookimpl
        def gand_register_losses():
            return [Eager()]
        """, "gand_register_losses returned an instance of Eager; register the class itself"),
    "loss-arguments-renamed": ("""
        from gand.api import Loss
        from gand.hookspecs import hookimpl

        class OldStyle(Loss):
            name = "old-style"
            def d_loss(self, D, x_real, x_fake, ctx): ...
            def g_loss(self, D, *, real, fake, ctx): ...

        @hookimpl
        def gand_register_losses():
            return [OldStyle]
        """, "loss old-style: d_loss takes no argument 'real'; gand calls d_loss(D, *, real, "
             "fake, ctx)"),
    "not-a-subclass": ("""
        from gand.hookspecs import hookimpl

        class Lookalike:
            name = "lookalike"

        @hookimpl
        def gand_register_variants():
            return [Lookalike]
        """, "gand_register_variants returned Lookalike, which is not a subclass of "
             "gand.api.Variant"),
}


@pytest.mark.parametrize("case", sorted(BAD_PLUGINS))
def test_a_plugin_with_a_mistake_is_reported_and_the_rest_work(gand_inprocess, tmp_path,
                                                               monkeypatch, case):
    source, message = BAD_PLUGINS[case]
    # A module name per case: an imported module stays in sys.modules for the session.
    site = fake_dist(tmp_path / "site", f"gand_bad_{case.replace('-', '_')}", source, entry="bad")
    monkeypatch.syspath_prepend(str(site))
    rows = {p["name"]: p for p in gand_inprocess.json("plugins")}
    assert rows["bad"]["error"].startswith(message), rows["bad"]["error"]
    assert "\n" not in rows["bad"]["error"] and rows["bad"]["registers"] == {}
    assert [name for name, row in rows.items() if row["error"]] == ["bad"]
    line = next(x for x in gand_inprocess.ok("plugins").splitlines() if x.startswith("bad "))
    assert f"ERROR: {message}" in line
    code, out, err = gand_inprocess("plugins", "--check")
    assert code == 1 and err.strip().splitlines() == [f"gand: plugin bad: {rows['bad']['error']}"]
    assert gand_inprocess("plugins", "--check", env={"GAND_PLUGINS": "gan,builtin-losses,"
                                                     "builtin-datasets"})[0] == 0
    job = gand_inprocess.json("submit", "gan", "--data", "ring8", "--steps", "5")
    assert job["status"] == "queued"


def test_a_variant_and_a_loss_declaring_one_option_are_both_reported(gand_inprocess, tmp_path,
                                                                     monkeypatch):
    site = fake_dist(tmp_path / "site", "gand_clashing_loss", """
        from gand.api import Loss, Option
        from gand.hookspecs import hookimpl

        class Wide(Loss):
            name = "wide"
            options = {"ngf": Option(int, 64, "a loss option that dcgan also declares")}
            def d_loss(self, D, *, real, fake, ctx):
                return -D(real).mean() + D(fake).mean(), {}
            def g_loss(self, D, *, real, fake, ctx):
                return -D(fake).mean(), {}

        @hookimpl
        def gand_register_losses():
            return [Wide]
        """, entry="wide")
    monkeypatch.syspath_prepend(str(site))
    rows = {p["name"]: p for p in gand_inprocess.json("plugins")}
    why = ("option 'ngf' is declared by both variant dcgan (dcgan) and loss wide (wide)")
    assert why in rows["wide"]["warnings"] and why in rows["dcgan"]["warnings"]
    assert rows["wide"]["error"] is None and rows["wide"]["registers"] == {"losses": ["wide"]}
    code, _, err = gand_inprocess("plugins", "--check")
    assert code == 1 and f"gand: plugin wide: {why}" in err
    code, _, err = gand_inprocess("submit", "dcgan", "--data", "mnist:tests/data/mnist",
                                  "--loss", "wide")
    assert code == 2 and err.count("\n") == 1
    assert "variant dcgan and loss wide both declare option 'ngf'" in err
    assert gand_inprocess.json("submit", "gan", "--data", "ring8", "--loss", "wide",
                               "--steps", "3")["loss"] == "wide"  # gan has no ngf: no clash


# ---------------------------------------------------------------------------------------------
# Entry points: a broken plugin and the allowlist.


@pytest.fixture
def broken_dist(tmp_path, monkeypatch) -> Path:
    """A distribution `gand-broken-plugin` whose entry point `broken` raises on import."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "broken_plugin.py").write_text(
        "raise RuntimeError('broken_plugin cannot start: missing libfoo')\n")
    meta = site / "gand_broken_plugin-0.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gand-broken-plugin\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text("[gand]\nbroken = broken_plugin\n")
    monkeypatch.syspath_prepend(str(site))  # also invalidates importlib's caches
    return site


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(broken_dist):
    reg = plugins.load()
    broken = next(p for p in reg.plugins if p.name == "broken")
    assert (broken.dist, broken.version) == ("gand-broken-plugin", "0.1")
    assert broken.value == "broken_plugin"
    assert broken.error.startswith("RuntimeError: broken_plugin cannot start: missing libfoo")
    assert "broken_plugin.py:1" in broken.error and broken.registers == {}
    # Every other plugin loaded and registered its classes.
    assert {"gan", "dcgan"} <= set(reg.variants) and {"bce", "ls"} <= set(reg.losses)
    assert [p.name for p in reg.plugins if p.error] == ["broken"]


def test_the_allowlist_limits_what_loads():
    reg = plugins.load(allow=("gan", "builtin-losses", "builtin-datasets"))
    assert set(reg.variants) == {"gan"}
    loaded = {p.name for p in reg.plugins if p.error is None}
    assert loaded == {"gan", "builtin-losses", "builtin-datasets"}
    dcgan = next(p for p in reg.plugins if p.name == "dcgan")
    assert dcgan.error == "not in the GAND_PLUGINS allowlist" and dcgan.registers == {}
    with pytest.raises(UsageError, match="unknown variant 'dcgan'; installed: gan"):
        reg.variant("dcgan")


# ---------------------------------------------------------------------------------------------
# `gand plugins` (the real CLI, in a subprocess)


def _with_path(env: dict, path: Path) -> None:
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(path), env.get("PYTHONPATH")) if p)


def test_gand_plugins_json_shows_versions_registrations_and_errors(gand, broken_dist):
    _with_path(gand.env, broken_dist)
    gand.env["GAND_PLUGINS"] = "gan,builtin-losses,builtin-datasets,broken"
    rows = {p["name"]: p for p in gand.json("plugins")}
    gan = rows["gan"]
    assert (gan["package"], gan["module"], gan["error"]) == ("gand", "gand_plugins.gan", None)
    assert gan["version"] and gan["registers"] == {"variants": ["gan"]}
    assert {"bce", "ls"} <= set(rows["builtin-losses"]["registers"]["losses"])
    assert rows["broken"]["error"].startswith("RuntimeError: broken_plugin cannot start")
    assert rows["broken"]["package"] == "gand-broken-plugin" and rows["broken"]["version"] == "0.1"
    assert rows["dcgan"]["error"] == "not in the GAND_PLUGINS allowlist"
    assert rows["dcgan"]["registers"] == {}


def test_gand_plugins_table_shows_each_plugin(gand_inprocess, broken_dist, monkeypatch):
    monkeypatch.setattr(plugins, "_cached", None)  # reload: broken_dist is on sys.path now
    out = gand_inprocess.ok("plugins")
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "variants: gan" in lines["gan"] and "gand 0.1" in lines["gan"]
    assert "datasets: gauss1d, ring8" in lines["builtin-datasets"]
    assert "ERROR: RuntimeError: broken_plugin cannot start" in lines["broken"]
    assert "gand-broken-plugin 0.1" in lines["broken"]


def test_a_checkpoint_of_other_networks_is_one_line_not_a_key_error(registry):
    from gand.engine.trainer import Run
    from gand.jobspec import build_config

    small = build_config(registry, variant="gan", data="ring8", sets=["hidden=16"], device="cpu")
    large = build_config(registry, variant="gan", data="ring8", sets=["hidden=32"], device="cpu")
    wgan = build_config(registry, variant="wgan", data="ring8",
                        device="cpu")
    state = Run.build(small, registry, load_data=False).state(3)
    for other in (large, wgan):
        with pytest.raises(UsageError) as e:
            Run.build(other, registry, load_data=False).restore(state)
        assert str(e.value).startswith("the checkpoint does not match this job's networks: ")
        assert "\n" not in str(e.value)
    broken = dict(state, models={**state["models"], "nets": {"G": state["models"]["nets"]["G"]}})
    with pytest.raises(UsageError, match="the checkpoint has no network 'D'; it holds G"):
        Run.build(small, registry, load_data=False).restore(broken)


def test_plugins_options_lists_every_set_key_with_the_recipe_for_the_data(gand_inprocess):
    out = gand_inprocess.json("plugins", "options", "gan", "--data", "grid25")
    rows = {r["option"]: r for r in out["options"]}
    # The tricks against collapse (engine, variant and loss options alike) are all there,
    # each with its default and, for grid25, gan's recipe value.
    for key in ("pack", "mbstd", "d_norm", "instance_noise", "ema", "lr_g", "lr_d",
                "components", "label_smoothing", "lr_decay"):
        assert key in rows, key
    assert rows["pack"]["from"] == "engine" and rows["components"]["from"] == "variant gan"
    assert rows["label_smoothing"]["from"] == "loss bce"
    assert rows["components"]["default"] == 0 and rows["components"]["recipe"] == 100
    assert out["recipe_steps"] == 20000 and "recipe" not in rows["mbstd"]
    assert rows["d_norm"]["limits"] == ["one of none, spectral"]
    text = gand_inprocess.ok("plugins", "options", "gan", "--loss", "hinge")
    assert "label_smoothing" not in text and text.splitlines()[0].startswith("ada ")
