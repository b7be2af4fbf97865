"""Commands that judge what a generator learned: eval, eval train-classifier, interpolate, compare."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from gand.cli.context import jobs, print_json, registry, short, store
from gand.cli.paths import output_file, writing
from gand.errors import UsageError

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
JobArg = Annotated[str, typer.Argument(help="job id or unique prefix")]


class _JobByDefault(TyperGroup):
    """`gand eval JOB …` means `gand eval job JOB …`; `gand eval train-classifier` stays itself."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["job", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(cls=_JobByDefault, no_args_is_help=True,
                       help="Evaluate a job's generator (gand eval JOB), or train the MNIST classifier.")


@eval_app.command("job")
def evaluate(
    job: JobArg,
    metric: Annotated[Optional[list[str]], typer.Option(help="metric to run (repeatable; default: "
                                                             "the job's, else all that suit it)")] = None,
    checkpoint: Annotated[str, typer.Option(help="latest, best or a step")] = "latest",
    n: Annotated[Optional[int], typer.Option("--n", help="generated samples (default: the job's, "
                                                         "1000 images or 2500 vectors)")] = None,
    classifier: Annotated[Optional[str], typer.Option(help="MNIST classifier file (default: the job's "
                                                            "--eval-classifier)")] = None,
    extractor: Annotated[Optional[str], typer.Option(help="inception or mnist-classifier (default: "
                                                           "the classifier when there is one)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="metric option key=value")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    json_: JsonOpt = False,
) -> None:
    """Run metrics on one of a job's checkpoints and record the values in the store."""
    from gand.cli.outputs import load_run
    from gand.evaluation import run as evaluation
    from gand.evaluation import spec as eval_spec
    from gand.jobspec import data_infos, parse_sets

    if n is not None and not 2 <= n <= 100_000:
        raise UsageError(f"--n {n} is invalid; expected 2 to 100000")
    if extractor is not None and extractor not in ("inception", "mnist-classifier"):
        raise UsageError(f"--extractor {extractor!r} is invalid; expected inception or mnist-classifier")
    s = store()
    j = s.find_job(job)
    config = jobs().config(j)
    configured = config.eval
    classifier = (str(Path(classifier).expanduser().resolve()) if classifier
                  else configured.classifier if configured else None)
    info = data_infos(config)[0]
    names = list(dict.fromkeys(metric or [])) or (list(configured.metrics) if configured else []) \
        or eval_spec.default_metrics(registry(), info, classifier)
    if not names:
        raise UsageError(f"no installed metric suits job {short(j.id)}'s data ({info.spec}); "
                         f"installed: {', '.join(sorted(registry().metrics))}")
    classes = [eval_spec.metric_class(registry(), name) for name in names]
    for cls in classes:  # names and applicability first: a mistake costs no model loading
        cls().check(info, classifier)
    # The job's recorded options for the metrics run now; --set values are checked strictly.
    declared = eval_spec.declared_options(classes)
    options = {k: v for k, v in (configured.options if configured else {}).items()
               if k in declared}
    options.update(parse_sets(set_ or []))
    j, run, step = load_run(j.id, checkpoint, device)
    d = config.data[0]
    data = registry().dataset_type(d.type).load(d.arg, info, tuple(d.shape), run.device)
    warnings: list[str] = []
    ev = evaluation.Evaluator(run, registry(), names, data=data, classifier=classifier,
                              extractor=extractor,
                              num_samples=n or (configured.num_samples if configured else None),
                              options=options)
    results = ev.evaluate(step, warn=warnings.append)
    best_step = evaluation.record(s, j.id, step, results,
                                  configured.best_by if configured else None)
    for text in warnings:
        s.note(j.id, text)
    out = {"job": j.id, "step": step, "checkpoint": checkpoint, "best_step": best_step,
           "warnings": warnings,
           "results": [{"metric": r.metric, "values": r.values, "extractor": r.extractor,
                        "num_samples": r.num_samples, "reference": r.reference} for r in results]}
    if json_:
        print_json(out)
        return
    typer.echo(f"job {short(j.id)} at step {step}")
    for r in results:
        values = "  ".join(f"{k}={v:.4g}" for k, v in r.values.items())
        how = ", ".join(x for x in (r.extractor, f"n={r.num_samples}", r.reference) if x)
        typer.echo(f"{r.metric:15} {values}  ({how})")
    for text in warnings:
        typer.echo(f"warning: {text}")


@eval_app.command("train-classifier")
def train_classifier(
    data: Annotated[str, typer.Option("--data", help="labelled digits, e.g. mnist:DIR")],
    out: Annotated[Path, typer.Option("--out", help="where to write the classifier (.pt)")],
    epochs: Annotated[int, typer.Option(help="passes over the data")] = 8,  # classifier.EPOCHS
    limit: Annotated[Optional[int], typer.Option(help="use at most this many images")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    json_: JsonOpt = False,
) -> None:
    """Train the small MNIST CNN used for FID features, class coverage and stacked-modes.

    A fifth of the images (the same ones whatever --seed) is held out; the accuracy on them is
    printed and kept in the file's metadata.
    """
    import torch

    from gand.evaluation import classifier as clf
    from gand.jobspec import resolve_data

    if not 1 <= epochs <= 100:
        raise UsageError(f"--epochs {epochs} is invalid; expected 1 to 100")
    if limit is not None and limit < 100:
        raise UsageError(f"--limit {limit} is invalid; expected at least 100 images")
    output_file("--out", out)
    resolved = resolve_data(registry(), data)
    info = resolved.info
    if info.kind != "image" or not info.num_classes:
        raise UsageError(f"--data {data}: the classifier needs labelled images; {info.spec} "
                         f"is {'unlabelled ' if not info.num_classes else ''}{info.kind} data")
    source = registry().dataset_type(resolved.type_name).load(
        resolved.arg, info, (1, clf.SIZE, clf.SIZE), torch.device("cpu"))
    x, y = getattr(source, "x", None), getattr(source, "y", None)
    if x is None or y is None:
        raise UsageError(f"--data {data}: this dataset cannot be read whole for training")
    if limit is not None:
        keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:limit]
        x, y = x[keep], y[keep]
    # One thread: on a 30k-parameter CNN with batches of 64, more threads mostly wait on each
    # other; on a loaded 2-core machine two threads spent about 8 times the CPU per epoch.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, meta = clf.train(x, y, epochs=epochs, seed=seed)
    finally:
        torch.set_num_threads(threads)
    meta["data"] = resolved.spec
    with writing("--out", out):
        out.parent.mkdir(parents=True, exist_ok=True)
        clf.save(model, meta, out)
    if json_:
        print_json({"out": str(out), **meta})
    else:
        acc = meta["holdout_accuracy"]
        typer.echo(f"wrote {out}: {meta['train_images']} images × {epochs} epoch(s), held-out "
                   f"accuracy {acc:.2%} on {meta['holdout_images']} images" if acc is not None
                   else f"wrote {out}")


def interpolate(
    job: JobArg,
    out: Annotated[Path, typer.Option("--out", help="PNG file to write")],
    steps: Annotated[int, typer.Option(help="pictures per row (and rows, with --grid)")] = 10,
    grid: Annotated[bool, typer.Option("--grid", help="a 2-D grid over two latent directions")] = False,
    seed: Annotated[int, typer.Option(help="picks the latents")] = 0,
    method: Annotated[str, typer.Option(help="slerp or lerp")] = "slerp",
    label: Annotated[Optional[int], typer.Option(help="class to hold fixed (conditional variants)")] = None,
    checkpoint: Annotated[str, typer.Option(help="latest, best or a step")] = "latest",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    json_: JsonOpt = False,
) -> None:
    """Pictures along a latent path: a row between two latents, or a grid (--grid).

    Variants with their own pictures use them instead: stylegan a style-mixing grid (--steps
    rows and columns of sources), cyclegan A→B→A triplets of --steps real images.
    """
    import torch

    from gand.cli.outputs import load_run
    from gand.api import StyleMixing, Translation
    from gand.engine import interpolate as interp
    from gand.engine import samples

    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: interpolations are written as PNG; use a path ending in .png")
    output_file("--out", out)
    interp.check(steps, method)
    j, run, step = load_run(job, checkpoint, device)
    variant = run.variant
    # Variants with their own pictures declare them (the core names no concrete variant).
    if isinstance(variant, StyleMixing):
        kind, nrow = "style-mixing", steps + 1
        g = torch.Generator(device=run.device).manual_seed(seed)
        images = variant.style_mixing_grid(run.models, steps, generator=g).float().cpu()
    elif isinstance(variant, Translation):
        kind, nrow = "cycle", 3
        images = variant.cycle_triplets(run.models, _real_images(j, run, steps, seed), "a2b").cpu()
    else:
        kind = "grid" if grid else "row"
        images = interp.latent_walk(variant, run.models, steps=steps, grid=grid, seed=seed,
                                    method=method, label=label).cpu()
        nrow = steps
    with writing("--out", out):
        if images.dim() == 2:  # vector data: the generated points along the path, in order
            from gand.evaluation.plots import path_plot

            path_plot(images.numpy(), out, f"{kind} interpolation, step {step}")
        else:
            samples.save_grid(images, out, nrow=nrow)
    store().add_artifact(j.id, "interpolation", str(out.resolve()), step)
    if json_:
        print_json({"job": j.id, "step": step, "kind": kind, "out": str(out),
                    "pictures": int(images.shape[0]), "nrow": nrow})
    else:
        typer.echo(f"wrote {kind} interpolation ({images.shape[0]} pictures) from step {step} to {out}")


def _real_images(job, run, n: int, seed: int):
    """n real images of the job's first domain (A), the same ones for the same seed."""
    import torch

    from gand.jobspec import data_infos

    d, info = run.config.data[0], data_infos(run.config)[0]
    source = registry().dataset_type(d.type).load(d.arg, info, tuple(d.shape), run.device)
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return source.sample(n).x


def compare(
    jobs: Annotated[list[str], typer.Argument(help="two or more job ids or prefixes")],
    plot: Annotated[Optional[Path], typer.Option(help="write overlaid curves to this PNG")] = None,
    json_: JsonOpt = False,
) -> None:
    """Final and best metrics of several jobs side by side, and their curves overlaid."""
    from gand.evaluation import plots, report

    if len(jobs) < 2:
        raise UsageError(f"compare needs at least two jobs; got {len(jobs)}")
    if plot is not None and plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot}: plots are written as PNG; use a path ending in .png")
    if plot is not None:
        output_file("--plot", plot)
    s = store()
    found = [s.find_job(j) for j in jobs]
    if len({j.id for j in found}) < len(found):
        raise UsageError("compare was given the same job twice")
    directions = report.directions(registry())
    rows, series = [], {}
    for j in found:
        evals = [e.to_json() for e in s.evaluations(j.id)]
        latest = s.latest_metrics(j.id)
        label = f"{short(j.id)[:8]} {j.name or j.variant + '/' + j.loss}"
        rows.append({
            "id": j.id, "name": j.name, "variant": j.variant, "loss": j.loss,
            "status": j.to_json()["status"], "step": j.step,
            "final": {k: v for k, v in latest.items() if k in plots.LOSS_KEYS},
            "latest": {k: e["value"] for k, e in report.latest(evals).items()},
            "best": {k: {"value": e["value"], "step": e["step"]}
                     for k, e in report.best(evals, directions).items()},
        })
        if plot is not None:
            series[label] = {"metrics": [m.to_json() for m in s.metrics(j.id)], "evaluations": evals}
    if plot is not None:
        with writing("--plot", plot):
            plots.plot(series, plot, "gand compare")
    if json_:
        print_json({"jobs": rows, "plot": str(plot) if plot else None})
        return
    keys = sorted({k for r in rows for k in list(r["final"]) + list(r["latest"])})
    typer.echo(f"{'':18}" + "".join(f"{short(r['id'])[:8] + ' ' + r['variant']:>24}" for r in rows))
    typer.echo(f"{'loss':18}" + "".join(f"{r['loss']:>24}" for r in rows))
    for k in keys:
        cells = []
        for r in rows:
            v = r["final"].get(k, r["latest"].get(k))
            b = r["best"].get(k)
            cell = "-" if v is None else f"{v:.4g}"
            if b is not None:
                cell += f" (best {b['value']:.4g}@{b['step']})"
            cells.append(f"{cell:>24}")
        typer.echo(f"{k:18}" + "".join(cells))
    if plot is not None:
        typer.echo(f"plot: {plot}")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
    app.command("interpolate")(interpolate)
    app.command("compare")(compare)
