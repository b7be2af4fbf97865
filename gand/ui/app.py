"""The dashboard as one ASGI app: pages, the JSON API, the live stream and the static files.

It reads and acts only through a JobService. Errors are answered, never leaked: a GandError
becomes its status (404 unknown job, 400 bad parameter, 403 refused action, 409 wrong state,
503 broker down) with a JSON body {"error": ...} under /api/ and a small page elsewhere; anything
else is logged here and answered 500 without a traceback.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Optional, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gand.errors import (BrokerUnavailable, GandError, NotFound, StateError, UsageError)
from gand.jobs.service import JobService
from gand.ui import api, pages, stream

log = logging.getLogger("gand.ui")

STATIC = Path(__file__).parent / "static"
# Scripts and styles come from this server only; uPlot sets element styles from script, which
# a style-src without 'unsafe-inline' would not stop, but its legend uses style attributes.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'")
STATUS = ((NotFound, 404), (api.Forbidden, 403), (UsageError, 400), (StateError, 409),
          (BrokerUnavailable, 503), (GandError, 400))


def create_app(service: JobService, *, token: str, read_only: bool = False,
               allowed_hosts: Optional[Sequence[str]] = None,
               poll_seconds: float = stream.POLL_SECONDS) -> Starlette:
    """The dashboard over `service`. Actions need `token`; `read_only` refuses them all.
    `allowed_hosts` (Host header values) defends a loopback-bound dashboard against DNS
    rebinding: a page elsewhere cannot make a browser read it under another name."""
    routes = [
        Route("/", pages.jobs),
        Route("/jobs/{ref}", pages.job),
        Route("/compare", pages.compare),
        Route("/workers", pages.workers),
        Route("/api/jobs", api.jobs),
        Route("/api/jobs/{ref}", api.job),
        Route("/api/jobs/{ref}/metrics", api.metrics),
        Route("/api/jobs/{ref}/cancel", api.cancel, methods=["POST"]),
        Route("/api/jobs/{ref}/resume", api.resume, methods=["POST"]),
        Route("/api/compare", api.compare),
        Route("/api/workers", api.workers),
        Route("/api/artifacts/{artifact_id:int}", api.artifact),
        Route("/api/events", stream.events),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={GandError: _gand_error, HTTPException: _http_error,
                                        Exception: _crash})
    app.state.service = service
    app.state.access = api.Access(token=token, read_only=read_only)
    app.state.poll_seconds = poll_seconds
    # Set when the server begins to stop: the open streams end themselves at their next tick,
    # instead of being cut (with a traceback) when the graceful shutdown runs out.
    app.state.stopping = threading.Event()
    return app


def _answer(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return api.json_response({"error": message, "status": status}, status)
    return pages.error_page(request, status, message)


async def _gand_error(request: Request, exc: Exception) -> Response:
    status = next(code for kind, code in STATUS if isinstance(exc, kind))
    return _answer(request, status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no such page or resource: {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}
    return _answer(request, exc.status_code, message.get(exc.status_code, exc.detail))


async def _crash(request: Request, exc: Exception) -> Response:
    log.error("error serving %s %s", request.method, request.url.path, exc_info=exc)
    return _answer(request, 500, "internal error; the gand ui log has the details")


class SecurityHeaders:
    """No framing, no content sniffing, no third-party code: every response says so."""

    HEADERS = [(b"content-security-policy", CSP.encode()),
               (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"no-referrer"),
               (b"x-frame-options", b"DENY")]

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.HEADERS
            await send(message)

        await self.app(scope, receive, with_headers)
