"""The dashboard's JSON API under /api/: the same shapes as the CLI's --json, and the actions.

Reads need nothing; an action (cancel, resume) needs the dashboard's token as
`Authorization: Bearer TOKEN` and a dashboard not started with --read-only. Every route is a
plain function: Starlette runs it in a thread, so the store's blocking calls never stall the
event loop that serves the live streams.
"""
from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from gand.errors import GandError, UsageError
from gand.jobs.service import JobService
from gand.store import parse_status
from gand.ui import shapes

MAX_STEP = 2**31 - 1


class Forbidden(GandError):
    """An action without the token, or on a read-only dashboard (HTTP 403)."""


@dataclass(frozen=True)
class Access:
    """Who may act: the token an action must carry, and whether actions are off altogether."""

    token: str
    read_only: bool

    def check(self, request: Request) -> None:
        if self.read_only:
            raise Forbidden("this dashboard is read-only (gand ui --read-only): no actions")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time a wrong token takes to refuse says nothing about the right one.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 self.token.encode()):
            raise Forbidden("actions need the dashboard's token as 'Authorization: Bearer "
                            "TOKEN' (printed by `gand ui`, or GAND_UI_TOKEN)")


def json_response(data: Any, status: int = 200) -> Response:
    return Response(shapes.dumps(data), status_code=status, media_type="application/json")


def _service(request: Request) -> JobService:
    return request.app.state.service


def jobs(request: Request) -> Response:
    """Every job as `gand list --json` has it, plus latest metrics, ETA and queue position;
    `status=` and `variant=` filter."""
    status = request.query_params.get("status")
    variant = request.query_params.get("variant")
    rows = _service(request).summaries()
    if status:
        wanted = parse_status(status).value
        rows = [r for r in rows if r["status"] == wanted]
    if variant:
        rows = [r for r in rows if r["variant"] == variant]
    return json_response(rows)


def job(request: Request) -> Response:
    """`gand show --json` of one job."""
    return json_response(_service(request).show(request.path_params["ref"]))


def metrics(request: Request) -> Response:
    """`gand metrics --json` of one job: `keys=a,b` picks keys, `since=STEP` only the steps
    after it, `points=N` about N rows per key (for a long run's first paint)."""
    q = request.query_params
    service = _service(request)
    j = service.find(request.path_params["ref"])
    keys = shapes.parse_list("keys", q.get("keys"), 100)
    since = shapes.parse_int("since", q.get("since"), -1, MAX_STEP)
    points = shapes.parse_int("points", q.get("points"), 2, shapes.MAX_POINTS)
    rows = service.store.metrics(j.id, since=since)
    return json_response(shapes.metric_rows(rows, keys, points))


def compare(request: Request) -> Response:
    """Several jobs for the compare page: each one's `show --json` (without its event
    history) and their configs side by side, with the keys whose values differ marked."""
    ids = shapes.parse_list("ids", request.query_params.get("ids"), shapes.MAX_COMPARE)
    if not ids:
        raise UsageError("ids= is missing; expected ids=JOB,JOB (ids or unique prefixes)")
    service = _service(request)
    shown = []
    for ref in ids:
        data = service.show(ref)
        if data["id"] not in [s["id"] for s in shown]:
            shown.append(data)
    return json_response({"jobs": shown,
                          "config": shapes.config_diff([s["config"] for s in shown])})


def workers(request: Request) -> Response:
    """`gand workers --json`: the worker registry (idle, busy, stopped and lost workers)."""
    return json_response(_service(request).workers())


def artifact(request: Request) -> Response:
    """An artifact's file (a sample grid), looked up by its id in the store: no path from the
    request ever reaches the filesystem."""
    art, path = _service(request).artifact_file(request.path_params["artifact_id"])
    # A recorded file is never rewritten (names carry step and epoch), so it may be cached.
    return FileResponse(path, headers={"Cache-Control": "private, max-age=86400"},
                        media_type="image/png" if path.suffix == ".png" else None)


def cancel(request: Request) -> Response:
    """`gand cancel --json`, with the token."""
    request.app.state.access.check(request)
    j = _service(request).cancel(request.path_params["ref"])
    return json_response({"id": j.id, "status": j.status.value})


async def resume(request: Request) -> Response:
    """`gand resume --json`, with the token; the body may be {"steps": N}."""
    from starlette.concurrency import run_in_threadpool

    request.app.state.access.check(request)
    body = await request.body()
    steps = None
    if body.strip():
        try:
            data = json.loads(body)
        except ValueError:
            raise UsageError("the request body is not JSON; expected {\"steps\": N} or nothing") \
                from None
        if not isinstance(data, dict) or set(data) - {"steps"}:
            raise UsageError("the request body must be {\"steps\": N}")
        steps = data.get("steps")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)
                                  or not 1 <= steps <= MAX_STEP):
            raise UsageError(f"steps={steps!r} is invalid; expected an integer ≥ 1")
    r = await run_in_threadpool(_service(request).resume, request.path_params["ref"], steps)
    return json_response({"id": r.job.id, "status": r.job.status.value,
                          "from_step": r.from_step, "total_steps": r.total_steps})
