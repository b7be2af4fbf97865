"""A third party adds a variant and a loss without touching gand.

tests/example_plugin is an out-of-tree distribution (`gand-example-plugin`, its own
pyproject.toml and a `gand` entry point). The test pip-installs it into this environment, sees
`gand plugins` discover it, trains a job with its `tiny-mlp` variant and `softplus-ns` loss in a
real worker process, generates from it, and uninstalls it again.
"""
from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gand import plugins

PACKAGE = Path(__file__).resolve().parent / "example_plugin"
DIST = "gand-example-plugin"


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check",
                           "--no-input", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def example_plugin(tmp_path, monkeypatch):
    """gand-example-plugin installed into this environment for the test, uninstalled after."""
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in tests/.
    source = tmp_path / "example_plugin"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                   "__pycache__"))
    # --force-reinstall: a copy left behind by an interrupted run is replaced, not kept.
    # --no-index, --no-build-isolation and --no-deps: offline, with this environment's setuptools.
    p = pip("install", "--no-index", "--no-deps", "--no-build-isolation", "--force-reinstall",
            str(source))
    assert p.returncode == 0, f"pip install failed:\n{p.stdout}\n{p.stderr}"
    importlib.invalidate_caches()
    monkeypatch.setattr(plugins, "_cached", None)  # this process's registry reloads with it
    try:
        yield
    finally:
        p = pip("uninstall", "-y", DIST)
        importlib.invalidate_caches()
        assert p.returncode == 0, f"pip uninstall failed:\n{p.stdout}\n{p.stderr}"


def test_installed_plugin_trains_a_job_in_a_real_worker(gand, gand_inprocess, example_plugin):
    # Discovered through its entry point (the worker below is a fresh process that finds it too).
    rows = {p["name"]: p for p in gand_inprocess.json("plugins")}
    example = rows["example"]
    assert (example["package"], example["version"], example["module"]) == (DIST, "0.1.0",
                                                                           "gand_example")
    assert example["registers"] == {"variants": ["tiny-mlp"], "losses": ["softplus-ns"]}
    assert example["error"] is None

    # Its contracts are checked at submit like a first-party plugin's.
    rc, _, err = gand_inprocess("submit", "tiny-mlp", "--loss", "wasserstein", "--data", "ring8")
    assert rc == 2 and "variant tiny-mlp outputs logits" in err
    rc, _, err = gand_inprocess("submit", "tiny-mlp", "--data", "ring8", "--set", "hiden=8")
    assert rc == 2 and "--set hiden: unknown setting" in err and "hidden" in err

    job_id = gand_inprocess.json("submit", "tiny-mlp", "--loss", "softplus-ns", "--data", "ring8",
                                 "--steps", "50", "--set", "real_weight=0.5", "--seed", "2")["id"]
    assert gand.worker().wait(timeout=180) == 0, gand.worker_log()
    job = gand_inprocess.json("show", job_id)
    assert job["status"] == "succeeded", gand.worker_log()
    assert (job["variant"], job["loss"], job["step"]) == ("tiny-mlp", "softplus-ns", 50)
    assert job["config"]["options"]["real_weight"] == 0.5
    assert job["config"]["options"]["lr"] == 1e-3  # the variant's `defaults`
    # The loss's own report went through the engine into the store.
    assert {"d_loss", "g_loss", "d_real"} <= set(job["metrics"])

    out = gand.home / "samples.npy"
    gand_inprocess.ok("generate", job_id, "--n", "300", "--out", str(out), "--seed", "1")
    x = np.load(out)
    assert x.shape == (300, 2) and np.isfinite(x).all() and x.std() > 0


@pytest.fixture
def scaffolded(tmp_path, gand_inprocess, monkeypatch):
    """A package written by `gand plugins new demo-gan`, pip-installed for the test."""
    out = gand_inprocess.json("plugins", "new", "demo-gan", "--dir", str(tmp_path))
    root = Path(out["path"])
    assert root == tmp_path / "demo-gan"
    p = pip("install", "--no-index", "--no-deps", "--no-build-isolation", "--force-reinstall",
            str(root))
    assert p.returncode == 0, f"pip install failed:\n{p.stdout}\n{p.stderr}"
    importlib.invalidate_caches()
    monkeypatch.setattr(plugins, "_cached", None)
    try:
        yield root
    finally:
        p = pip("uninstall", "-y", "gand-demo-gan")
        importlib.invalidate_caches()
        assert p.returncode == 0, f"pip uninstall failed:\n{p.stdout}\n{p.stderr}"


def test_a_scaffolded_plugin_installs_shows_and_passes_its_own_tests(gand_inprocess, scaffolded):
    rows = {p["name"]: p for p in gand_inprocess.json("plugins")}
    assert rows["demo-gan"]["package"] == "gand-demo-gan" and rows["demo-gan"]["error"] is None
    assert rows["demo-gan"]["registers"] == {"variants": ["demo-gan"], "losses": ["demo-gan-ns"]}
    assert rows["demo-gan"]["capabilities"] == {"demo-gan": ["latent-space", "ada"]}
    assert gand_inprocess("plugins", "--check")[0] == 0
    # The package's own test, as its author runs it: a job through a real worker process.
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(scaffolded / "tests")], capture_output=True, text=True, timeout=600,
                       cwd=scaffolded)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 passed" in p.stdout


def test_plugins_new_refuses_a_bad_name_or_an_existing_folder(gand_inprocess, tmp_path):
    where = tmp_path / "plugins"
    code, _, err = gand_inprocess("plugins", "new", "My Plugin", "--dir", str(where))
    assert code == 2 and "plugin name 'My Plugin' is invalid" in err and err.count("\n") == 1
    (where / "taken").mkdir(parents=True)
    code, _, err = gand_inprocess("plugins", "new", "taken", "--dir", str(where))
    assert code == 2 and "already exists" in err
    assert [x.name for x in where.iterdir()] == ["taken"] and not any((where / "taken").iterdir())
