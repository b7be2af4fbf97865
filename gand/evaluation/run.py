"""Running a job's metrics on its generator and recording them: on the worker and on demand.

An Evaluator holds what one job's evaluations share (the extractor, the reference features);
`record` writes values with their protocol, marks the best checkpoint, and turns metric
warnings into job events. Evaluation never disturbs training: it samples with its own seeded
generators inside a forked RNG.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from gand.api import DataInfo, DataSource, EvalContext, Metric, parse_options
from gand.evaluation.spec import DEFAULT_SAMPLES, declared_options, metric_class
from gand.plugins import Registry

CHUNK = 500          # generated samples per forward pass
REFERENCE_SEED = 0   # the real reference set is the same draw every time


@dataclass
class Result:
    metric: str
    values: dict[str, float]
    extractor: Optional[str]
    num_samples: int
    reference: str


@dataclass
class Evaluator:
    """Evaluates one job's generator with the chosen metrics."""

    run: Any                            # gand.engine.trainer.Run (models and variant)
    registry: Registry
    metrics: list[str]
    data: Optional[DataSource] = None   # the real data; needed by fid, kid and diversity
    classifier: Optional[str] = None
    extractor: Optional[str] = None
    num_samples: Optional[int] = None
    options: dict[str, Any] = field(default_factory=dict)
    cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.classes: list[type[Metric]] = [metric_class(self.registry, m) for m in self.metrics]
        self.options = parse_options(declared_options(self.classes), self.options)
        info = self.info
        for cls in self.classes:
            cls().check(info, self.classifier)
        self.num_samples = self.num_samples or DEFAULT_SAMPLES.get(info.kind, 1000)

    @property
    def info(self) -> DataInfo:
        from gand.jobspec import data_infos

        return data_infos(self.run.config)[0]

    def _reference(self) -> str:
        spec = self.run.config.data[0].spec
        return f"{spec}: {self.num_samples} real examples (seed {REFERENCE_SEED})"

    def _generator(self, step: int) -> Callable[[int], torch.Tensor]:
        """n samples from the generator, drawn once per evaluation and shared by its metrics."""
        held: list[torch.Tensor] = []
        seed = int(self.run.config.seed) + 1 + step

        def generate(n: int) -> torch.Tensor:
            if held and held[0].shape[0] >= n:
                return held[0][:n]
            g = torch.Generator(device=self.run.device).manual_seed(seed)
            parts = [self.run.variant.sample(self.run.models, min(CHUNK, n - i), generator=g)
                     for i in range(0, n, CHUNK)]
            held[:] = [torch.cat(parts).detach()]
            return held[0]

        return generate

    def _real(self, n: int) -> torch.Tensor:
        if self.data is None:
            raise RuntimeError("this evaluation was set up without the job's data")
        key = ("real", n)
        if key not in self.cache:
            devices = [self.run.device] if self.run.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(REFERENCE_SEED)
                self.cache[key] = torch.cat([self.data.sample(min(CHUNK, n - i)).x
                                             for i in range(0, n, CHUNK)])
        return self.cache[key]

    @torch.no_grad()
    def evaluate(self, step: int, warn: Callable[[str], None] = lambda text: None) -> list[Result]:
        """Every chosen metric's values for the generator as it is now."""
        ctx = EvalContext(info=self.info, num_samples=self.num_samples, device=self.run.device,
                          generate=self._generator(step), real=self._real,
                          reference=self._reference(), options=self.options,
                          classifier=self.classifier, extractor=self.extractor, warn=warn,
                          cache=self.cache)
        devices = [self.run.device] if self.run.device.type == "cuda" else []
        results = []
        # Forked RNG: a job evaluated while training draws the same numbers as one that is not.
        with torch.random.fork_rng(devices=devices):
            for cls in self.classes:
                metric = cls()
                values = metric.compute(ctx)
                p = metric.protocol(ctx)
                results.append(Result(cls.name, values, p.extractor, p.num_samples, p.reference))
        return results


def record(store, job_id: str, step: int, results: list[Result],
           best_by: Optional[dict[str, str]] = None, fence=None) -> Optional[int]:
    """Stores results with their protocol; marks the best checkpoint; returns its step.

    `fence`: the worker's lease (gand.store.fence), so that a stale worker records nothing.
    """
    for r in results:
        store.add_evaluations(job_id, step, r.metric, r.values, extractor=r.extractor,
                              num_samples=r.num_samples, reference=r.reference, fence=fence)
    return mark_best(store, job_id, best_by, fence) if best_by else None


def mark_best(store, job_id: str, best_by: dict[str, str], fence=None) -> Optional[int]:
    """Marks the checkpoint whose evaluation is best by `best_by`; returns its step."""
    checkpoints = {c.step: c for c in store.checkpoints(job_id)}
    rows = [e for e in store.evaluations(job_id, best_by["key"])
            if e.metric == best_by["metric"] and e.step in checkpoints and e.value is not None]
    if not rows:
        return None
    sign = 1.0 if best_by["direction"] == "min" else -1.0
    # Ties go to the earlier step: a later checkpoint must improve to take over.
    best = min(rows, key=lambda e: (sign * e.value, e.step))
    chosen = checkpoints[best.step]
    if not chosen.is_best:
        store.mark_best(job_id, chosen.id, fence=fence)
    return best.step


def periodic(store, job, current_run: Callable[[], Any], registry: Registry,
             worker: Optional[str] = None, log=None, fence=None) -> Callable[[int], None]:
    """The trainer's `evaluate` callback for a job submitted with --eval-every.

    `current_run` returns the Run being trained (a rollback replaces it); `fence` is the
    worker's lease: every value, best mark and event is written only while it holds.
    """
    from gand.jobs.config import JobConfig
    from gand.store.fence import LeaseLost

    spec = JobConfig.from_dict(job.config).eval
    if not spec:
        return lambda step: None
    state: dict[str, Evaluator] = {}
    cache: dict = {}  # reference features and the extractor outlive a rollback's new Run

    def evaluate(step: int) -> None:
        try:
            run = current_run()
            if "e" not in state or state["e"].run is not run:
                state["e"] = Evaluator(run, registry, list(spec.metrics),
                                       data=run.data[0] if run.data else None,
                                       classifier=spec.classifier,
                                       num_samples=spec.num_samples,
                                       options=dict(spec.options), cache=cache)
            results = state["e"].evaluate(
                step, warn=lambda text: store.note(job.id, text, worker, fence=fence))
            record(store, job.id, step, results, spec.best_by, fence=fence)
        except LeaseLost:
            raise  # not the metric's fault: the job has a new owner, and this worker must stop
        except Exception as e:  # a metric must never take the training down with it
            if log is not None:
                log.exception("job %s: evaluation at step %d failed", job.id, step)
            store.note(job.id, f"evaluation at step {step} failed: {type(e).__name__}: {e}",
                       worker, fence=fence)

    return evaluate
