"""The dashboard's four HTML pages. Each is one small shell (templates/) that names what it shows;
its script (static/) reads the JSON API and the live stream and draws everything.

A page for a job or a comparison checks its ids first, so a bad id is a 404, not an empty page.
"""
from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path
from string import Template

from starlette.requests import Request
from starlette.responses import HTMLResponse

from gand.errors import UsageError
from gand.ui import shapes

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=None)
def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text())


def render(request: Request, page: str, title: str, status: int = 200, **data: str) -> HTMLResponse:
    """The layout around templates/{page}.html, with `data` as data-* attributes of <body>."""
    attrs = {"page": page, "read-only": "1" if request.app.state.access.read_only else "0", **data}
    body = _template("layout.html").substitute(
        title=html.escape(title), page=page,
        attrs=" ".join(f'data-{k}="{html.escape(v)}"' for k, v in attrs.items()),
        content=_template(f"{page}.html").safe_substitute(
            {k: html.escape(v) for k, v in data.items()}))
    return HTMLResponse(body, status_code=status)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error", f"{status}", status=status, message=message)


def jobs(request: Request) -> HTMLResponse:
    return render(request, "jobs", "jobs")


def job(request: Request) -> HTMLResponse:
    j = request.app.state.service.find(request.path_params["ref"])
    return render(request, "job", j.name or j.id[:12], job=j.id)


def compare(request: Request) -> HTMLResponse:
    refs = shapes.parse_list("ids", request.query_params.get("ids"), shapes.MAX_COMPARE)
    if len(refs) < 1:
        raise UsageError("ids= is missing: pick jobs on the jobs page, or open "
                         "/compare?ids=JOB,JOB")
    service = request.app.state.service
    ids = list(dict.fromkeys(service.find(r).id for r in refs))
    return render(request, "compare", "compare", ids=json.dumps(ids))


def workers(request: Request) -> HTMLResponse:
    return render(request, "workers", "workers")
