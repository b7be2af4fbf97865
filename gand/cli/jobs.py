"""Job lifecycle commands: submit, list, show, cancel, resume. They parse and print; the job
service (gand.jobs.service) does the work."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from gand.cli.context import jobs, print_json, registry, short
from gand.presets import PRESETS
from gand.jobs import config as jobcfg

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def submit(
    variant: Annotated[str, typer.Argument(help="GAN variant, e.g. gan, dcgan (see `gand plugins`)")],
    data: Annotated[str, typer.Option("--data", help="dataset spec(s): NAME, NAME:ARG or a path; "
                                                     "comma-separated for two domains")],
    loss: Annotated[Optional[str], typer.Option(help="loss plugin (default: the variant's)")] = None,
    steps: Annotated[Optional[int], typer.Option(
        help=f"generator updates to train (default: the preset's or the variant's for the "
             f"data, e.g. gan on ring8/grid25; else {jobcfg.STEPS})")] = None,
    preset: Annotated[Optional[str], typer.Option(
        help="a named recipe under your --set values: " + "; ".join(
            f"{p.name}: {p.help}" for p in PRESETS.values()))] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="examples per batch")] = None,
    lr: Annotated[Optional[float], typer.Option(help="learning rate of G and D")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="variant/loss option key=value")] = None,
    seed: Annotated[Optional[int], typer.Option(help="random seed (default: drawn and recorded)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = jobcfg.DEVICE,
    queue_name: Annotated[str, typer.Option("--queue", help="queue the job is sent to")] = jobcfg.QUEUE,
    priority: Annotated[int, typer.Option(help="0-9: a free worker takes the highest first, "
                                              "then the oldest")] = jobcfg.PRIORITY,
    gpus: Annotated[Optional[int], typer.Option("--gpus", help="0: a CPU job; 1: a GPU job "
                                                              "(default: either)")] = None,
    min_gpu_mem: Annotated[Optional[float], typer.Option(help="GPU memory the job needs, in GB "
                                                             "(a worker's slot must have it)")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="checkpoint every N steps")] = None,
    sample_every: Annotated[Optional[int], typer.Option(help="sample grid every N steps")] = None,
    name: Annotated[Optional[str], typer.Option(help="a label for the job")] = None,
    max_recoveries: Annotated[int, typer.Option(help="requeues after a worker dies before the job fails")] = jobcfg.MAX_RECOVERIES,
    keep_checkpoints: Annotated[int, typer.Option(help="newest checkpoints kept, plus the best (0: all)")] = jobcfg.KEEP_CHECKPOINTS,
    on_diverge: Annotated[str, typer.Option(help="on NaN/Inf: fail, or rollback to the last checkpoint "
                                                 "with half the learning rate (at most 3 times)")] = jobcfg.ON_DIVERGE,
    eval_every: Annotated[Optional[int], typer.Option(help="run metrics every N steps (and at the end)")] = None,
    eval_metric: Annotated[Optional[list[str]], typer.Option(help="metric to run (repeatable; default: "
                                                                  "all that suit the data)")] = None,
    best_by: Annotated[Optional[str], typer.Option(help="mark the best checkpoint by this metric or value")] = None,
    eval_classifier: Annotated[Optional[str], typer.Option(help="MNIST classifier file for FID and "
                                                                "class coverage")] = None,
    eval_n: Annotated[Optional[int], typer.Option(help="generated samples per evaluation")] = None,
    eval_set: Annotated[Optional[list[str]], typer.Option(help="metric option key=value")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="then follow it until it ends")] = False,
    json_: JsonOpt = False,
) -> None:
    """Validate a job, record it and queue it; prints the job id."""
    from gand.jobspec import parse_sets

    job = jobs().submit(
        registry(), name=name, variant=variant, data=data, loss=loss, steps=steps, preset=preset,
        batch_size=batch_size, lr=lr, sets=set_ or [], seed=seed, device=device,
        queue=queue_name, checkpoint_every=checkpoint_every, sample_every=sample_every,
        evaluation=dict(every=eval_every, metrics=eval_metric, best_by=best_by,
                        classifier=eval_classifier, num_samples=eval_n,
                        sets=parse_sets(eval_set or [])),
        max_recoveries=max_recoveries, keep_checkpoints=keep_checkpoints, on_diverge=on_diverge,
        priority=priority, gpus=gpus, min_gpu_mem=min_gpu_mem)
    if json_:
        print_json({"id": job.id, "status": job.status, "name": job.name, "variant": job.variant,
                    "loss": job.loss, "total_steps": job.total_steps, "queue": job.queue,
                    "priority": job.priority})
    else:
        typer.echo(job.id)
    if follow:
        from gand.cli.watch import follow as follow_cmd

        follow_cmd(job.id, json_=json_)


def list_jobs(
    status: Annotated[Optional[str], typer.Option(help="only jobs in this state")] = None,
    json_: JsonOpt = False,
) -> None:
    """List jobs, newest first; queued jobs show their place in the queue (`#1` runs next)."""
    found = jobs().list(status)
    order = {j.id: i for i, j in enumerate(jobs().queue_order(), 1)}
    if json_:
        print_json([{**j.to_json(), "queue_position": order.get(j.id)} for j in found])
        return
    if not found:
        typer.echo("no jobs")
        return
    typer.echo(f"{'ID':12}  {'STATUS':10}  {'VARIANT':10}  {'LOSS':11}  {'STEP':>13}  {'PRI':>3}  "
               f"{'QUEUE':>5}  {'NAME':20}  CREATED")
    for j in found:
        place = f"#{order[j.id]}" if j.id in order else "-"
        typer.echo(f"{short(j.id):12}  {j.status:10}  {j.variant:10}  {j.loss:11}  "
                   f"{j.step:>6}/{j.total_steps:<6}  {j.priority:>3}  {place:>5}  "
                   f"{(j.name or '-')[:20]:20}  {j.created_at:%Y-%m-%d %H:%M:%S}")


def show(job: Annotated[str, typer.Argument(help="job id or unique prefix")], json_: JsonOpt = False) -> None:
    """Status, progress, latest metrics, checkpoints, artifacts and history of a job."""
    d = jobs().show(job)
    if json_:
        print_json(d)
        return
    typer.echo(f"job      {d['id']}" + (f"  ({d['name']})" if d["name"] else ""))
    typer.echo(f"status   {d['status']}   step {d['step']}/{d['total_steps']}   worker {d['worker'] or '-'}"
               f"   priority {d['priority']}")
    if d.get("queue_position"):
        typer.echo(f"queue    #{d['queue_position']} on {d['queue']}"
                   + (f"; waiting: {d['waiting_for']}" if d.get("waiting_for") else ""))
    typer.echo(f"variant  {d['variant']}   loss {d['loss']}   data {', '.join(d['data'])}")
    rt = (d.get("config") or {}).get("runtime")
    if rt:  # what the worker's device made of the `auto` fast-path options
        typer.echo(f"ran as   {rt['device']}  precision={rt['precision']}  "
                   f"channels_last={str(rt['channels_last']).lower()}  "
                   f"compile={str(rt['compile']).lower()}  optim_impl={rt['optim_impl']}  "
                   f"cuda_graph={str(rt.get('cuda_graph', False)).lower()}  ({rt['why']})")
    if d["error"]:
        typer.echo(f"error    {d['error']}")
    if d["metrics"]:
        typer.echo("metrics  " + "  ".join(f"{k}={v:.4g}" for k, v in sorted(d["metrics"].items())))
    for c in d["checkpoints"]:
        typer.echo(f"checkpoint step {c['step']:>7}  {c['bytes']:>10} B  {c['path']}"
                   + ("  (best)" if c.get("is_best") else ""))
    samples = [a for a in d["artifacts"] if a["kind"] == "samples"]
    for a in d["artifacts"][-5:] if len(samples) > 5 else d["artifacts"]:
        typer.echo(f"artifact {a['kind']:8} step {a['step']}  {a['path']}")
    if d["evaluations"]:
        from gand.evaluation.report import latest_lines

        for line in latest_lines(d["evaluations"]):
            typer.echo(f"eval     {line}")
    for e in d["events"]:
        typer.echo(f"event    {e['time']}  {e['from_status'] or '-'} → {e['to_status']}"
                   f"  {e['worker'] or ''}  {e['reason'] or ''}")


def cancel(job: Annotated[str, typer.Argument(help="job id or unique prefix")], json_: JsonOpt = False) -> None:
    """Cancel a job: at once when queued, within seconds when running."""
    j = jobs().cancel(job)
    if json_:
        print_json({"id": j.id, "status": j.status})
    else:
        typer.echo(f"{short(j.id)} {j.status}")


def resume(
    job: Annotated[str, typer.Argument(help="job id or unique prefix")],
    steps: Annotated[Optional[int], typer.Option(help="new total of generator updates")] = None,
    from_scratch: Annotated[bool, typer.Option(
        "--from-scratch", help="train again from step 0, not using its checkpoints (their "
                               "files are kept)")] = False,
    json_: JsonOpt = False,
) -> None:
    """Queue a stopped job again; it continues from its latest checkpoint that verifies."""
    r = jobs().resume(job, steps, from_scratch=from_scratch)
    j, reached, total = r.job, r.from_step, r.total_steps
    if json_:
        print_json({"id": j.id, "status": j.status, "from_step": reached, "total_steps": total,
                    "from_scratch": from_scratch, "forgot_checkpoints": r.forgot_checkpoints})
    elif from_scratch:
        typer.echo(f"{short(j.id)} queued; starts again from step 0 to {total} "
                   f"({r.forgot_checkpoints} earlier checkpoints no longer used)")
    else:
        typer.echo(f"{short(j.id)} queued; continues from step {reached} to {total}")


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("list")(list_jobs)
    app.command("show")(show)
    app.command("cancel")(cancel)
    app.command("resume")(resume)
