"""Named datasets: `gand data add|list|remove`, so `--data faces` can stand for a stored spec.

A name is checked exactly as `gand submit` checks `--data` (the spec is resolved and described)
and stored with absolute paths, so it means the same thing from any working directory. A job
records the spec a name resolved to, so removing or re-pointing a name never changes a job.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from gand.cli.context import jobs, print_json, registry, store
from gand.errors import GandError, UsageError
from gand.jobs.config import DATASET_NAME_RE

if TYPE_CHECKING:  # the plugins (and torch) load only for add and list --check
    from gand.jobspec import ResolvedData

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]

app = typer.Typer(name="data", help="Named datasets, usable in `gand submit --data NAME`.",
                  no_args_is_help=True)


def named_datasets() -> dict[str, str]:
    """Every registered dataset name with its stored spec (what `jobspec.resolve_data` asks)."""
    return jobs().named_datasets()


def check_name(name: str) -> None:
    """Refuses a name that could be read as a path or that a dataset type already answers to."""
    if not DATASET_NAME_RE.match(name):
        raise UsageError(f"dataset name {name!r} is invalid; expected a letter, then up to 63 "
                         f"letters, digits, '_' or '-'")
    if name in registry().datasets:
        raise UsageError(f"dataset name {name!r} is a dataset type (`--data {name}` already means "
                         f"it); pick another name")


def canonical_spec(r: "ResolvedData") -> str:
    """`TYPE:ARG` (resolve_data made ARG absolute if it is a path that exists), else `TYPE`."""
    return r.type_name if r.arg is None else f"{r.type_name}:{r.arg}"


def _describe(name: str, spec: str) -> dict[str, Any]:
    """One row of `gand data list --check`: the stored spec and what it resolves to now, or
    why not."""
    from gand.jobspec import resolve_data

    row: dict[str, Any] = {"name": name, "spec": spec, "kind": None, "shape": None,
                           "num_classes": None, "size": None, "error": None}
    try:
        info = resolve_data(registry(), spec).info
    except GandError as e:  # the data may have moved since: show that instead of failing
        row["error"] = str(e)
        return row
    row.update(kind=info.kind, shape=list(info.shape), num_classes=info.num_classes, size=info.size)
    return row


def _summary(row: dict[str, Any]) -> str:
    if row["error"]:
        return f"UNAVAILABLE: {row['error']}"
    text = f"{row['kind']} {'x'.join(str(s) for s in row['shape'])}"
    if row["size"] is not None:
        text += f", {row['size']} examples"
    if row["num_classes"]:
        text += f", {row['num_classes']} classes"
    return text


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="the name, e.g. faces")],
    spec: Annotated[str, typer.Argument(help="a path, or a spec such as mnist:DIR or folder:DIR")],
    json_: JsonOpt = False,
) -> None:
    """Name a dataset spec after checking it exactly as `gand submit --data` would."""
    from gand.jobspec import resolve_data

    check_name(name)
    # The spec may itself be a registered name: the new name then copies its stored spec.
    resolved = resolve_data(registry(), spec, named_datasets)
    canonical = canonical_spec(resolved)
    store().add_dataset(name, canonical)
    row = _describe(name, canonical)
    if json_:
        print_json(row)
    else:
        typer.echo(f"{name} = {canonical}  ({_summary(row)})")


@app.command("list")
def list_(
    check: Annotated[bool, typer.Option("--check", help="also read each dataset: what it holds "
                                                        "now, or why it is unavailable")] = False,
    json_: JsonOpt = False,
) -> None:
    """Registered dataset names and their specs (with --check, what each holds now)."""
    found = store().list_datasets()
    rows = [_describe(d.name, d.spec) if check else d.to_json() for d in found]
    if json_:
        print_json(rows)
        return
    if not rows:
        typer.echo("no named datasets (add one with `gand data add NAME PATH`)")
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        typer.echo(f"{r['name']:{width}}  {r['spec']}" + (f"  ({_summary(r)})" if check else ""))


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="a registered dataset name")],
    json_: JsonOpt = False,
) -> None:
    """Forget a dataset name; jobs that used it keep the spec it resolved to."""
    spec: Optional[str] = named_datasets().get(name)
    store().remove_dataset(name)  # an unknown name: NotFound listing the known ones
    if json_:
        print_json({"name": name, "spec": spec, "removed": True})
    else:
        typer.echo(f"removed {name} (was {spec})")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="data")
