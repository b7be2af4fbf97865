"""docs/plugins.md is what a plugin author reads: it must name every hook and public API class."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from gand import api, hookspecs

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()


def public_api_classes() -> list[str]:
    return sorted(name for name, obj in vars(api).items()
                  if inspect.isclass(obj) and obj.__module__ == api.__name__
                  and not name.startswith("_"))


def hooks() -> list[str]:
    return sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
                  if hasattr(fn, "gand_spec"))


def test_the_lists_are_not_empty():
    assert len(public_api_classes()) >= 15 and len(hooks()) >= 4


@pytest.mark.parametrize("name", public_api_classes() + hooks())
def test_docs_plugins_md_names_it(name):
    assert re.search(rf"`[^`]*\b{re.escape(name)}\b[^`]*`", DOC), \
        f"docs/plugins.md never names {name} (in `code`)"
