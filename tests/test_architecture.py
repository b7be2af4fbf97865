"""The module boundaries the README's tree states, checked on the source itself."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a front end must leave to the job service: moving a job's state or its messages.
JOB_LOGIC = {"transition", "enqueue", "create_job", "delete_job", "claim", "heartbeat",
             "check_broker", "reap"}


def sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def imported(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_nothing_outside_the_cli_imports_it():
    for path in sources("gand", "plugins", "workers"):
        if "cli" in path.relative_to(ROOT).parts or path.name == "__main__.py":
            continue  # `python -m gand` is the CLI's other entry point
        assert not {m for m in imported(path) if m.startswith("gand.cli")}, path


def test_the_cli_uses_no_worker_internals_and_holds_no_job_logic():
    for path in sources("gand/cli"):
        workers = {m for m in imported(path) if m.startswith("gand_workers")}
        assert workers <= {"gand_workers", "gand_workers.worker"}, (path, workers)
        calls = {n.func.attr for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert not calls & (JOB_LOGIC - {"reap"}), (path, calls & JOB_LOGIC)


def test_the_dashboard_is_a_front_end_like_the_cli():
    # It reads and acts through the job service: no worker, no job logic, no CLI.
    for path in sources("gand/ui"):
        assert not {m for m in imported(path) if m.startswith(("gand_workers", "gand.cli"))}, path
        calls = {n.func.attr for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert not calls & JOB_LOGIC, (path, calls & JOB_LOGIC)


@pytest.mark.parametrize("folder", ["gand/jobs", "gand/store", "gand/cli", "gand/ui"])
def test_the_job_service_store_cli_and_dashboard_do_not_import_torch_when_loaded(folder):
    heavy = ("torch", "torchvision", "numpy", "celery", "gand.engine", "gand.evaluation",
             "gand.api", "gand.jobspec", "gand.plugins", "gand_plugins", "gand_workers")
    for path in sources(folder):
        top = imported(path, top_level_only=True)
        assert not {m for m in top if m.split(".")[0] in heavy or m.startswith(heavy)}, path


CAPABILITY_NAMES = {"latent", "generate_from", "style_mixing_grid", "translate", "cycle_triplets",
                    "truncation", "supports_ada"}


def test_variant_capabilities_are_declared_not_probed():
    """gand finds a variant's optional capabilities with isinstance (gand.api), never by asking
    an object whether it has an attribute; only the plugin loader inspects signatures."""
    for path in sources("gand"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("hasattr", "getattr") and len(node.args) >= 2:
                name = node.args[1]
                assert node.func.id != "hasattr", f"{path}:{node.lineno} probes with hasattr"
                assert not (isinstance(name, ast.Constant) and name.value in CAPABILITY_NAMES), \
                    f"{path}:{node.lineno} probes for {name.value!r}"
        if path.name != "plugins.py":
            assert "inspect" not in {m.split(".")[0] for m in imported(path)}, path
