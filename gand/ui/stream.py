"""The live stream: one server-sent-event connection per page carries everything it watches.

Browsers open at most six HTTP/1.1 connections to a host, so a page never opens one stream per
job: it asks `/api/events?jobs=1&ids=A,B&workers=1` for the topics it shows and gets them
multiplexed as named events:

  jobs      the jobs board (`/api/jobs`), whenever any row changed
  job       one job's progress (`follow --json`'s frame) and how many artifacts, checkpoints,
            evaluations and events it has, so the page re-reads `/api/jobs/ID` when those grow
  metrics   {job_id, reset, rows}: metric rows (`metrics --json`) after the last step sent; the
            first, and the first after a resume changed the series, has reset=true and the
            whole series, so the page needs no separate fetch and misses no row in between
  workers   `/api/workers`, every few seconds, when it changed
  gone      {job_id}: the job was deleted

The stream polls the store in a worker thread about once a second; it sends only what changed.
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import StreamingResponse

from gand.errors import GandError, NotFound
from gand.jobs.service import JobService
from gand.ui import shapes

POLL_SECONDS = 1.0
WORKERS_SECONDS = 2.0     # the registry is one query; workers heartbeat every half lease
KEEPALIVE_SECONDS = 15.0  # a comment line, so proxies and dead clients are noticed
RETRY_MS = 2000
DEFAULT_POINTS = 2000


@dataclass
class _Watched:
    """What this stream last sent about one job."""

    job_id: str
    signature: Optional[tuple] = None
    epoch: Optional[int] = None
    step: int = -1


@dataclass
class Feed:
    """One page's topics and what was last sent on each; poll() returns what changed."""

    service: JobService
    board: bool
    jobs: list[_Watched]
    workers: bool
    points: int = DEFAULT_POINTS
    _last: dict[str, str] = field(default_factory=dict)
    _workers_at: float = 0.0

    def poll(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.board:
            self._send(out, "jobs", "jobs", self.service.summaries())
        for w in list(self.jobs):
            try:
                out += self._job(w)
            except NotFound:
                self.jobs.remove(w)
                out.append(("gone", shapes.dumps({"job_id": w.job_id})))
        if self.workers and time.monotonic() - self._workers_at >= WORKERS_SECONDS:
            self._workers_at = time.monotonic()
            try:
                rows: Any = self.service.workers()
            except GandError as e:  # the database is down: say so on the page, keep streaming
                rows = {"error": str(e)}
            self._send(out, "workers", "workers", rows)
        return out

    def _send(self, out: list, topic: str, event: str, data: Any) -> None:
        text = shapes.dumps(data)
        if self._last.get(topic) != text:
            self._last[topic] = text
            out.append((event, text))

    def _job(self, w: _Watched) -> list[tuple[str, str]]:
        store = self.service.store
        j = store.get_job(w.job_id)
        signature = (j.status, j.step, j.updated_at, j.epoch, j.total_steps)
        if signature == w.signature:
            return []
        w.signature = signature
        out: list[tuple[str, str]] = []
        state = self.service.progress(j.id)
        state["counts"] = {"artifacts": len(store.artifacts(j.id)),
                           "checkpoints": len(store.checkpoints(j.id)),
                           "evaluations": len(store.evaluations(j.id)),
                           "events": len(store.events(j.id))}
        self._send(out, f"job:{j.id}", "job", state)
        reset = w.epoch != j.epoch
        if reset or j.step > w.step:
            rows = store.metrics(j.id, since=None if reset else w.step)
            if rows or reset:
                out.append(("metrics", shapes.dumps({
                    "job_id": j.id, "reset": reset,
                    "rows": shapes.metric_rows(rows, [], self.points if reset else None)})))
                w.step = max([r.step for r in rows], default=-1 if reset else w.step)
            w.epoch = j.epoch
        return out


async def events(request: Request) -> StreamingResponse:
    """GET /api/events?jobs=1&ids=A,B&workers=1&points=N: the page's one live stream."""
    q = request.query_params
    service: JobService = request.app.state.service
    refs = shapes.parse_list("ids", q.get("ids"), shapes.MAX_COMPARE)
    points = shapes.parse_int("points", q.get("points"), 2, shapes.MAX_POINTS) or DEFAULT_POINTS
    # Unknown ids are a 404 now, before the stream starts, not an event later.
    found = await run_in_threadpool(lambda: [service.find(r).id for r in refs])
    feed = Feed(service, board=_flag(q.get("jobs")), workers=_flag(q.get("workers")),
                jobs=[_Watched(i) for i in dict.fromkeys(found)], points=points)
    state = request.app.state
    return StreamingResponse(_frames(feed, state.poll_seconds, state.stopping),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _frames(feed: Feed, interval: float, stopping: threading.Event) -> AsyncIterator[str]:
    # No disconnect check here: Starlette's StreamingResponse listens for the client leaving
    # and cancels this generator (a second reader of `receive` would steal that message).
    yield f"retry: {RETRY_MS}\n\n"
    quiet_since = time.monotonic()
    while not stopping.is_set():
        sent = await run_in_threadpool(feed.poll)
        for event, data in sent:
            yield f"event: {event}\ndata: {data}\n\n"
        if sent:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(interval)


def _flag(text: Optional[str]) -> bool:
    return (text or "").lower() in ("1", "true", "yes")
