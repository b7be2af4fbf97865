"""`gand plugins new NAME`: writes a working plugin package, in the spirit of datasette's plugin
template — a pyproject with the entry point, one variant, one loss, a README, and a test that
trains the variant for a few steps through a real `gand worker` and passes as generated.
"""
from __future__ import annotations

import re
from pathlib import Path
from string import Template

from gand.errors import UsageError

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "gand-$name"
version = "0.1.0"
description = "A gand plugin: the $name GAN variant and the $name-ns loss."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["gand"]

[project.optional-dependencies]
test = ["pytest"]

# gand finds the plugin through this entry point; its name is the plugin's name in
# `gand plugins` and in the GAND_PLUGINS allowlist. Entry points are read from the installed
# metadata: after changing this table, reinstall the package.
[project.entry-points.gand]
$name = "$module"

[tool.setuptools]
packages = ["$module"]
"""

MODULE = '''\
"""The $name gand plugin: a GAN variant and a loss, registered through gand's hooks.

Start here: the variant only says how to build G and D (AdversarialVariant supplies the
training step, the latent prior, sampling and EMA); the loss gets D as a callable and the real
and fake batches as keyword arguments. See gand's docs/plugins.md for every hook and interface.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from gand.api import DataInfo, Loss, Option, SupportsADA
from gand.engine.adversarial import AdversarialVariant
from gand.hookspecs import hookimpl

__version__ = "0.1.0"


class $variant_class(AdversarialVariant, SupportsADA):
    """An MLP GAN for vector data (ring8, grid25, gauss1d, or your own dataset type)."""

    name = "$name"
    help = "an MLP GAN for vector data (the gand-$name plugin)"
    data_kinds = frozenset({"vector"})
    outputs = frozenset({"logits", "critic"})  # D ends in one unbounded score per example
    default_loss = "$name-ns"
    options = {
        # AdversarialVariant reads `nz` (the latent size) when it builds and samples.
        "nz": Option(int, 8, "latent size", min=1, max=1024),
        "hidden": Option(int, 64, "hidden units of G and D", min=1, max=4096),
    }
    defaults = {"lr": 1e-3, "batch_size": 128}  # engine options this variant trains best with

    def networks(self, info: DataInfo, options):
        dim, h = math.prod(info.shape), options["hidden"]
        G = nn.Sequential(nn.Linear(options["nz"], h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                          nn.Linear(h, dim), nn.Unflatten(1, info.shape))
        # D: one value per example, no BatchNorm (so gradient penalties such as +r1 apply).
        D = nn.Sequential(nn.Flatten(), nn.Linear(dim, h), nn.LeakyReLU(0.2), nn.Linear(h, h),
                          nn.LeakyReLU(0.2), nn.Linear(h, 1))
        return G, D


class $loss_class(Loss):
    """The non-saturating GAN loss on logits: −log σ(l) = softplus(−l)."""

    name = "$name-ns"
    help = "non-saturating GAN loss via softplus on logits (the gand-$name plugin)"
    output = "logits"
    options = {"real_weight": Option(float, 1.0, "weight of D's loss on real data", min=0.0)}

    def d_loss(self, D, *, real, fake, ctx):
        real_term = F.softplus(-D(real)).mean()
        fake_term = F.softplus(D(fake)).mean()
        return self.opts["real_weight"] * real_term + fake_term, {"d_real": real_term.detach()}

    def g_loss(self, D, *, real, fake, ctx):
        return F.softplus(-D(fake)).mean(), {}


@hookimpl
def gand_register_variants() -> list:
    return [$variant_class]


@hookimpl
def gand_register_losses() -> list:
    return [$loss_class]
'''

TEST = '''\
"""The plugin as a user meets it: gand finds it, a job trains through a real worker process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture
def gand(tmp_path):
    """Runs `gand ARGS` in a subprocess against a fresh GAND_HOME (SQLite, files queue)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAND_")}
    env.update(GAND_HOME=str(tmp_path), GAND_CONFIG=str(tmp_path / "none.toml"),
               OMP_NUM_THREADS="1")

    def run(*args, check=True, timeout=300):
        p = subprocess.run([sys.executable, "-m", "gand", *args], env=env, capture_output=True,
                           text=True, timeout=timeout)
        assert not check or p.returncode == 0, f"gand {' '.join(args)}: {p.stderr}"
        return p

    return run


def test_gand_loads_the_plugin_without_problems(gand):
    rows = {p["name"]: p for p in json.loads(gand("plugins", "--json").stdout)}
    assert rows["$name"]["error"] is None, rows["$name"]
    assert rows["$name"]["registers"] == {"variants": ["$name"], "losses": ["$name-ns"]}
    assert gand("plugins", "--check", check=False).returncode == 0


def test_a_job_trains_through_a_real_worker(gand):
    job = json.loads(gand("submit", "$name", "--data", "ring8", "--steps", "40",
                          "--seed", "1", "--json").stdout)
    gand("worker", "--burst", "--loglevel", "WARNING")
    shown = json.loads(gand("show", job["id"], "--json").stdout)
    assert shown["status"] == "succeeded", shown["error"]
    assert shown["step"] == 40 and shown["loss"] == "$name-ns"
    assert {"d_loss", "g_loss", "d_real"} <= set(shown["metrics"])
'''

README = """\
# gand-$name

A gand plugin: the `$name` GAN variant (MLPs for vector data)
and the `$name-ns` loss (non-saturating, on logits). Made with `gand plugins new $name`.

```bash
pip install -e .            # in the environment gand runs in, on every worker machine too
gand plugins --check        # shows $name and checks every plugin
gand submit $name --data ring8 --steps 2000 --set hidden=128
gand worker --burst
python -m pytest tests      # trains a job through a real worker
```

Edit `$module/__init__.py`: `networks()` builds G and D; the loss gets D as a callable and
`real=`/`fake=` batches. gand's `docs/plugins.md` lists every hook and interface. The entry point
in `pyproject.toml` is read from the installed metadata: reinstall after changing it.
"""


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", name))


def new_plugin(name: str, folder: Path) -> Path:
    """Writes the package `gand-NAME` into folder/NAME; returns that path."""
    if not NAME_RE.match(name):
        raise UsageError(f"plugin name {name!r} is invalid; expected a lowercase letter, then up "
                         f"to 39 lowercase letters, digits or '-' (e.g. pacgan)")
    root = folder / name
    if root.exists():
        raise UsageError(f"{root} already exists; pick another name or --dir")
    module = "gand_" + name.replace("-", "_")
    values = {"name": name, "module": module, "variant_class": camel(name) + "Variant",
              "loss_class": camel(name) + "Loss"}
    files = {"pyproject.toml": PYPROJECT, "README.md": README,
             f"{module}/__init__.py": MODULE, f"tests/test_{module}.py": TEST}
    try:
        for rel, template in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(template).substitute(values))
    except OSError as e:
        raise UsageError(f"cannot write the plugin under {folder}: {e.strerror or e}") from None
    return root
