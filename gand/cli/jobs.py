"""Job lifecycle commands: submit, list, show, cancel, resume."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Optional

import typer

from gand import queue
from gand.cli.context import print_json, registry, short, store
from gand.cli.data import named_datasets
from gand.errors import BrokerUnavailable, StateError, UsageError
from gand.jobspec import build_config, parse_sets, reliability_options
from gand.store import ACTIVE, TERMINAL, JobStatus, parse_status

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def submit(
    variant: Annotated[str, typer.Argument(help="GAN variant, e.g. gan, dcgan (see `gand plugins`)")],
    data: Annotated[str, typer.Option("--data", help="dataset spec(s): NAME, NAME:ARG or a path; "
                                                     "comma-separated for two domains")],
    loss: Annotated[Optional[str], typer.Option(help="loss plugin (default: the variant's)")] = None,
    steps: Annotated[int, typer.Option(help="generator updates to train")] = 1000,
    batch_size: Annotated[Optional[int], typer.Option(help="examples per batch")] = None,
    lr: Annotated[Optional[float], typer.Option(help="learning rate of G and D")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="variant/loss option key=value")] = None,
    seed: Annotated[Optional[int], typer.Option(help="random seed (default: drawn and recorded)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    queue_name: Annotated[str, typer.Option("--queue", help="queue the job is sent to")] = queue.DEFAULT_QUEUE,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="checkpoint every N steps")] = None,
    sample_every: Annotated[Optional[int], typer.Option(help="sample grid every N steps")] = None,
    name: Annotated[Optional[str], typer.Option(help="a label for the job")] = None,
    max_recoveries: Annotated[int, typer.Option(help="requeues after a worker dies before the job fails")] = 3,
    keep_checkpoints: Annotated[int, typer.Option(help="newest checkpoints kept, plus the best (0: all)")] = 5,
    on_diverge: Annotated[str, typer.Option(help="on NaN/Inf: fail, or rollback to the last checkpoint "
                                                 "with half the learning rate (at most 3 times)")] = "fail",
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
    if name is not None and (not name.strip() or len(name) > 200 or not name.isprintable()):
        raise UsageError(f"--name {name!r} is invalid; expected 1-200 printable characters")
    config = build_config(registry(), variant=variant, data=data, loss=loss, steps=steps,
                          batch_size=batch_size, lr=lr, sets=set_ or [], seed=seed, device=device,
                          queue=queue_name, checkpoint_every=checkpoint_every,
                          sample_every=sample_every, named=named_datasets,
                          evaluation=dict(every=eval_every, metrics=eval_metric, best_by=best_by,
                                          classifier=eval_classifier, num_samples=eval_n,
                                          sets=parse_sets(eval_set or [])))
    config.update(reliability_options(max_recoveries=max_recoveries,
                                      keep_checkpoints=keep_checkpoints, on_diverge=on_diverge))
    queue.check_broker()  # before writing anything: no job is left behind for a dead broker
    s = store()
    job = s.create_job(variant=variant, loss=config["loss"], data=[d["spec"] for d in config["data"]],
                       config=config, total_steps=steps, queue=queue_name, name=name)
    try:
        queue.enqueue(job.id, queue_name)
    except BrokerUnavailable:
        s.delete_job(job.id)
        raise
    if json_:
        print_json({"id": job.id, "status": job.status, "name": job.name, "variant": job.variant,
                    "loss": job.loss, "total_steps": job.total_steps, "queue": job.queue})
    else:
        typer.echo(job.id)
    if follow:
        from gand.cli.watch import follow as follow_cmd

        follow_cmd(job.id, json_=json_)


def list_jobs(
    status: Annotated[Optional[str], typer.Option(help="only jobs in this state")] = None,
    json_: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    st = parse_status(status) if status else None
    jobs = store().list_jobs(st)
    if json_:
        print_json([j.to_json() for j in jobs])
        return
    if not jobs:
        typer.echo("no jobs")
        return
    typer.echo(f"{'ID':12}  {'STATUS':10}  {'VARIANT':10}  {'LOSS':11}  {'STEP':>13}  {'NAME':20}  CREATED")
    for j in jobs:
        typer.echo(f"{short(j.id):12}  {j.status:10}  {j.variant:10}  {j.loss:11}  "
                   f"{j.step:>6}/{j.total_steps:<6}  {(j.name or '-')[:20]:20}  "
                   f"{j.created_at:%Y-%m-%d %H:%M:%S}")


def show_data(job_id: str) -> dict:
    s = store()
    job = s.find_job(job_id)
    data = job.to_json()
    data["metrics"] = s.latest_metrics(job.id)
    data["checkpoints"] = [c.to_json() for c in s.checkpoints(job.id)]
    data["artifacts"] = [a.to_json() for a in s.artifacts(job.id)]
    data["events"] = [e.to_json() for e in s.events(job.id)]
    data["evaluations"] = [e.to_json() for e in s.evaluations(job.id)]
    return data


def show(job: Annotated[str, typer.Argument(help="job id or unique prefix")], json_: JsonOpt = False) -> None:
    """Status, progress, latest metrics, checkpoints, artifacts and history of a job."""
    d = show_data(job)
    if json_:
        print_json(d)
        return
    typer.echo(f"job      {d['id']}" + (f"  ({d['name']})" if d["name"] else ""))
    typer.echo(f"status   {d['status']}   step {d['step']}/{d['total_steps']}   worker {d['worker'] or '-'}")
    typer.echo(f"variant  {d['variant']}   loss {d['loss']}   data {', '.join(d['data'])}")
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
    s = store()
    j = s.find_job(job)
    status = JobStatus(j.status)
    if status == JobStatus.queued:
        j = s.transition(j.id, JobStatus.queued, JobStatus.cancelled, reason="cancelled by user")
    elif status == JobStatus.running:
        j = s.transition(j.id, JobStatus.running, JobStatus.cancelling, worker=j.worker,
                         reason="cancel requested", lease_expires_at=j.lease_expires_at)
    elif status == JobStatus.cancelling:
        pass  # already on its way
    else:
        raise StateError(f"job {short(j.id)} is {status.value}; only queued or running jobs can be cancelled")
    if json_:
        print_json({"id": j.id, "status": j.status})
    else:
        typer.echo(f"{short(j.id)} {j.status}")


def resume(
    job: Annotated[str, typer.Argument(help="job id or unique prefix")],
    steps: Annotated[Optional[int], typer.Option(help="new total of generator updates")] = None,
    json_: JsonOpt = False,
) -> None:
    """Queue a stopped job again; it continues from its latest checkpoint."""
    s = store()
    j = s.find_job(job)
    status = JobStatus(j.status)
    total = j.total_steps if steps is None else steps
    if steps is not None and steps < 1:
        raise UsageError(f"--steps {steps} is invalid; expected an integer ≥ 1")
    if status in ACTIVE:
        lease = j.lease_expires_at
        if lease is not None and lease.tzinfo is None:
            lease = lease.replace(tzinfo=timezone.utc)
        if lease is not None and lease > datetime.now(timezone.utc):
            raise StateError(f"job {short(j.id)} is {status.value} on worker {j.worker} (lease valid "
                             f"until {lease:%H:%M:%S}); cancel it first")
        expected, reason = status, f"resumed after worker {j.worker} stopped renewing its lease"
    elif status in TERMINAL:
        expected, reason = status, "resumed by user"
    else:
        raise StateError(f"job {short(j.id)} is {status.value}; nothing to resume")
    reached = max([c.step for c in s.checkpoints(j.id)], default=0)
    if total <= reached:
        raise UsageError(f"job {short(j.id)} already reached step {reached}; pass --steps N with "
                         f"N > {reached} to train further")
    queue.check_broker()
    j = s.transition(j.id, expected, JobStatus.queued, reason=reason, total_steps=total, error=None)
    queue.enqueue(j.id, j.queue)
    if json_:
        print_json({"id": j.id, "status": j.status, "from_step": reached, "total_steps": total})
    else:
        typer.echo(f"{short(j.id)} queued; continues from step {reached} to {total}")


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("list")(list_jobs)
    app.command("show")(show)
    app.command("cancel")(cancel)
    app.command("resume")(resume)
