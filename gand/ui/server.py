"""Runs the dashboard on uvicorn: binds the socket itself (so --port 0 works and a port in use is
one clear error), picks the token, and says where to open it."""
from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

import uvicorn

from gand.errors import UsageError
from gand.jobs.service import JobService

# Names a browser may use for a loopback-bound dashboard (an SSH tunnel keeps them too).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
# Streams end within a poll once asked to stop; anything still open after this is cut.
GRACEFUL_SHUTDOWN_SECONDS = 5


@dataclass(frozen=True)
class Listening:
    url: str
    token: str
    token_generated: bool
    read_only: bool
    loopback: bool


class _Server(uvicorn.Server):
    """uvicorn's server, which first tells the open streams to end when asked to stop."""

    def __init__(self, config: uvicorn.Config, stopping: threading.Event):
        super().__init__(config)
        self.stopping = stopping

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.stopping.set()
        super().handle_exit(sig, frame)


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a UsageError that says what to change."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is invalid; expected 0 to 65535 (0: any free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"--host {host!r} is not an address of this machine: {e}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}; pick another --port "
                         f"or --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(service: JobService, *, host: str, port: int, read_only: bool,
          token: Optional[str], on_ready: Callable[[Listening], None]) -> None:
    """Serves the dashboard until interrupted; `on_ready` hears where, once it listens."""
    from gand.ui.app import create_app

    if token and len(token) < 16:
        raise UsageError("GAND_UI_TOKEN is too short to guard actions; use at least 16 "
                         "characters, or leave it unset for a random one")
    _ = service.store  # opens (and migrates) the database now: a bad URL is one line, not a 500
    generated = not token
    token = token or new_token()
    loopback = is_loopback(host)
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    app = create_app(service, token=token, read_only=read_only,
                     allowed_hosts=[*LOOPBACK_NAMES] if loopback else None)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    server = _Server(config, app.state.stopping)
    on_ready(Listening(f"http://{shown}:{bound}/", token, generated, read_only, loopback))
    server.run(sockets=[sock])
