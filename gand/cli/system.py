"""Commands about the installation: worker, workers, plugins, config."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gand import settings as settings_mod
from gand.cli.context import print_json, registry
from gand.errors import UsageError


def worker(
    queues: Annotated[str, typer.Option(help="comma-separated queues to take jobs from")] = "gand",
    concurrency: Annotated[int, typer.Option(help="CPU worker processes side by side (without "
                                                  "GPUs)")] = 1,
    gpus: Annotated[Optional[str], typer.Option(help="all, none or indexes such as 0,1: one "
                                                     "worker process per GPU slot")] = None,
    jobs_per_gpu: Annotated[int, typer.Option(help="worker processes sharing each GPU, each "
                                                   "capped to 1/K of its memory")] = 1,
    max_jobs_per_child: Annotated[int, typer.Option(help="replace a worker process after N jobs "
                                                         "(frees GPU memory; 0: never)")] = 0,
    burst: Annotated[bool, typer.Option("--burst", help="exit once the queues are empty")] = False,
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
    child: Annotated[bool, typer.Option("--child", hidden=True,
                                        help="a supervisor's child (internal)")] = False,
) -> None:
    """Run workers that take jobs from the queues and train them (one process per slot)."""
    from gand.jobs.config import QUEUE_RE

    names = [q.strip() for q in queues.split(",") if q.strip()]
    if not names or any(not QUEUE_RE.match(q) for q in names):
        raise UsageError(f"--queues {queues!r} is invalid; expected comma-separated queue names")
    if not 1 <= concurrency <= 64:
        raise UsageError(f"--concurrency {concurrency} is invalid; expected 1 to 64")
    if not 1 <= jobs_per_gpu <= 16:
        raise UsageError(f"--jobs-per-gpu {jobs_per_gpu} is invalid; expected 1 to 16")
    if not 0 <= max_jobs_per_child <= 1_000_000:
        raise UsageError(f"--max-jobs-per-child {max_jobs_per_child} is invalid; expected 0 "
                         f"(never) or a number of jobs")
    if gpus is not None and gpus.strip().lower() != "none" and concurrency != 1:
        raise UsageError(f"--concurrency {concurrency} is for CPU workers; with --gpus {gpus} "
                         f"use --jobs-per-gpu")
    if loglevel.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise UsageError(f"--loglevel {loglevel!r} is invalid; expected DEBUG, INFO, WARNING or ERROR")
    from gand_workers import worker as worker_mod

    raise typer.Exit(worker_mod.run(names, concurrency, burst, loglevel.upper(), gpus=gpus,
                                    jobs_per_gpu=jobs_per_gpu,
                                    max_jobs_per_child=max_jobs_per_child, child=child))


plugins_app = typer.Typer(name="plugins", help="Installed plugins, and a scaffold for new ones.")


@plugins_app.callback(invoke_without_command=True)
def plugins(
    ctx: typer.Context,
    check: Annotated[bool, typer.Option("--check", help="exit 1 when any plugin has a problem "
                                                        "(for CI and after an upgrade)")] = False,
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Installed plugins: versions, what each registers, and any problem found as it loaded."""
    if ctx.invoked_subcommand is not None:
        return
    from gand.api import capabilities

    reg = registry()
    if json_:
        rows = []
        for p in reg.plugins:
            row = p.to_json()
            row["capabilities"] = {v: capabilities(reg.variants[v])
                                   for v in p.registers.get("variants", [])}
            rows.append(row)
        print_json(rows)
    else:
        for p in reg.plugins:
            what = "; ".join(f"{k}: {', '.join(v)}" for k, v in p.registers.items()) or "-"
            ver = f"{p.dist} {p.version}" if p.dist else p.value
            typer.echo(f"{p.name:18} {ver:22} {what}" + (f"  ERROR: {p.error}" if p.error else "")
                       + "".join(f"  WARNING: {w}" for w in p.warnings))
        from gand.presets import PRESETS

        typer.echo(f"{'presets':18} {', '.join(PRESETS)}   (gand submit --preset NAME; "
                   f"`gand plugins presets` describes them)")
    problems = reg.problems()
    if check and problems:
        for name, why in problems:
            typer.echo(f"gand: plugin {name}: {why}", err=True)
        raise typer.Exit(1)


@plugins_app.command("presets")
def presets(
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """The named recipes `gand submit --preset NAME` applies under your --set values."""
    from gand.presets import PRESETS

    if json_:
        print_json([p.to_json() for p in PRESETS.values()])
        return
    for p in PRESETS.values():
        which = ", ".join(sorted(p.variants)) if p.variants is not None else "any variant"
        settings = " ".join(f"{k}={v}" for k, v in p.settings.items()) or "-"
        typer.echo(f"{p.name:10} ({which}) {p.help}\n{'':10} {settings}")


@plugins_app.command("options")
def options(
    variant: Annotated[str, typer.Argument(help="an installed variant, e.g. gan")],
    loss: Annotated[Optional[str], typer.Option(help="the loss (default: the variant's)")] = None,
    data: Annotated[Optional[str], typer.Option(help="a dataset spec: also show the values the "
                                                     "variant recommends for it (its recipe)")] = None,
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Every `--set` option a job accepts (the engine's tricks, the variant's, the loss's):
    type, default, range, and the recipe's value for --data."""
    from gand.engine import options as engine_options
    from gand.jobspec import loss_class, resolve_data

    reg = registry()
    v = reg.variant(variant)
    loss_cls = loss_class(reg, loss or v.default_loss)
    table = engine_options.declared(v, loss_cls)
    recipe = dict(v.data_defaults([resolve_data(reg, d).info for d in data.split(",")])) if data else {}
    steps = recipe.pop("steps", None)
    origin = {**{k: "engine" for k in engine_options.ENGINE_OPTIONS},
              **{k: f"variant {v.name}" for k in v.options},
              **{k: f"loss {loss_cls.name}" for k in loss_cls.options}}
    rows = []
    for key in sorted(table):
        opt = table[key]
        limits = ([f"one of {', '.join(map(str, opt.choices))}"] if opt.choices else []) + \
            ([f"≥ {opt.min:g}"] if opt.min is not None else []) + \
            ([f"≤ {opt.max:g}"] if opt.max is not None else []) + \
            ([f"< {opt.below:g}"] if opt.below is not None else [])
        row = {"option": key, "type": opt.type.__name__, "default": opt.default,
               "from": origin.get(key, "engine"), "limits": limits, "help": opt.help}
        if key in recipe:
            row["recipe"] = recipe[key]
        rows.append(row)
    if json_:
        print_json({"variant": v.name, "loss": loss_cls.name, "data": data,
                    "recipe_steps": steps, "options": rows})
        return
    if steps is not None:
        typer.echo(f"steps for {data}: {steps} (--steps overrides)")
    for r in rows:
        value = f"{r['default']}" + (f" (for {data}: {r['recipe']})" if "recipe" in r else "")
        typer.echo(f"{r['option']:16} {r['type']:5} {value:26} {r['help']}"
                   + (f" [{'; '.join(r['limits'])}]" if r["limits"] else ""))


@plugins_app.command("new")
def new_plugin(
    name: Annotated[str, typer.Argument(help="the plugin's name, e.g. pacgan: its variant is "
                                             "NAME and its loss NAME-ns")],
    dir_: Annotated[Path, typer.Option("--dir", help="where to create the NAME/ folder")] = Path("."),
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Write a working plugin package (pyproject, a variant, a loss, a test, a README)."""
    from gand.scaffold import new_plugin as write

    root = write(name, dir_)
    if json_:
        print_json({"name": name, "path": str(root)})
    else:
        typer.echo(f"wrote {root}\nnext: pip install -e {root} && gand plugins --check && "
                   f"python -m pytest {root / 'tests'}")


def config(json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """The effective settings and where each came from."""
    from gand.queue import redact

    settings_mod.load()  # a bad value is refused here too, naming where it came from
    values = settings_mod.resolve()
    rows = {k: {"value": redact(v.value) if k.endswith("_url") else v.value, "source": v.source}
            for k, v in values.items()}
    rows["config_file"] = {"value": str(settings_mod.config_path()), "source": "GAND_CONFIG or XDG"}
    if json_:
        print_json(rows)
        return
    for k, v in rows.items():
        typer.echo(f"{k:13} {v['value']}    ({v['source']})")


def workers(
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """The fleet: every worker process on every host, its GPUs, its job, and lost ones."""
    from gand.cli.context import jobs

    out = jobs().workers()
    if json_:
        print_json(out)
        return
    if not out:
        typer.echo("no workers have registered (start one with `gand worker`)")
    for r in out:
        gpus = ",".join(str(g.get("index")) for g in r["gpus"]) or "cpu"
        typer.echo(f"{r['host']:16} {r['pid']:>7}  {r['state']:7} gpu {gpus:6} "
                   f"queues {','.join(r['queues']):12} "
                   + (f"job {r['job'][:12]}" if r["job"] else "")
                   + f"  last seen {r['last_seen'][11:19]}")


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("workers")(workers)
    app.add_typer(plugins_app, name="plugins")
    app.command("config")(config)
