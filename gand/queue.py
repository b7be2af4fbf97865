"""The Celery app and the one message gand sends: "run job <id>", as JSON.

The broker only wakes a worker; the database decides. With GAND_BROKER_URL=redis://... the queue
is Redis; with nothing configured it is kombu's filesystem transport under GAND_HOME/broker, so
one machine needs no server and runs the very same code path.
"""
from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional
from urllib.parse import parse_qsl, urlsplit

from gand import settings as settings_mod
from gand.errors import BrokerUnavailable, UsageError

if TYPE_CHECKING:  # Celery is imported by the commands that talk to the broker, not by all
    from celery import Celery

TASK = "gand.run_job"
DEFAULT_QUEUE = "gand"
# Redis re-delivers an unacknowledged message after this long. Jobs run for hours, and a dead
# worker is found by its expired database lease (seconds) rather than by the broker, so the
# broker's timeout only needs to exceed any job's length: a redelivery of a live job is dropped
# anyway, because the job is no longer `queued`.
VISIBILITY_TIMEOUT = 7 * 24 * 3600
CONNECT_TIMEOUT = 3   # seconds for one attempt to reach the broker
SOCKET_TIMEOUT = 30   # seconds a reply from the broker may take (longer than kombu's BRPOP poll)
# A check that the broker is there (submit, burst monitor) waits no longer for its reply than
# for its connection: a server that accepts and never answers is down too.
QUICK = {"socket_timeout": CONNECT_TIMEOUT}
# How often an idle worker on the embedded (filesystem) broker looks for a message. kombu's
# default is 1 s, which alone made submit → first step take 0.5 s on average and up to 1 s;
# a look is one listing of a small folder per queue, so ten a second cost nothing measurable
# (tests/benchmarks/latency.py). Redis needs no polling: its worker blocks on the server.
FILESYSTEM_POLL_SECONDS = 0.1


def transport_options(s: settings_mod.Settings) -> dict:
    if s.broker_url.startswith("filesystem://"):
        folder = s.broker_folder
        for sub in ("queue", "processed", "control"):
            try:
                (folder / sub).mkdir(parents=True, exist_ok=True)
            except OSError as e:  # a read-only or full GAND_HOME
                raise BrokerUnavailable(f"the embedded broker cannot use {folder / sub}: "
                                        f"{e.strerror or e}") from None
        return {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
                "processed_folder": str(folder / "processed"), "store_processed": False,
                "control_folder": str(folder / "control"),
                "polling_interval": FILESYSTEM_POLL_SECONDS}
    # Every wait on Redis has a bound: a server that stops answering fails a command (or makes
    # a worker reconnect) instead of hanging it.
    return {"visibility_timeout": VISIBILITY_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": SOCKET_TIMEOUT}


SSL_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
SSL_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def ssl_options(url: str) -> Optional[dict]:
    """TLS settings for a rediss:// broker URL (None for any other URL).

    The server certificate is verified unless the URL says otherwise:
    `rediss://:PASSWORD@host:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem`.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return None
    query = dict(parse_qsl(parts.query))
    reqs = query.get("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    if reqs not in SSL_REQS:
        raise UsageError(f"broker URL: ssl_cert_reqs={query['ssl_cert_reqs']!r} is invalid; "
                         f"expected required, optional or none")
    out: dict = {"ssl_cert_reqs": SSL_REQS[reqs]}
    for key in SSL_FILES:
        if query.get(key):
            if not Path(query[key]).is_file():
                raise UsageError(f"broker URL: {key}={query[key]!r} is not a readable file")
            out[key] = query[key]
    return out


def make_app(s: Optional[settings_mod.Settings] = None) -> "Celery":
    from celery import Celery

    s = s or settings_mod.load()
    app = Celery("gand", broker=s.broker_url, set_as_current=True)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],       # never unpickle anything from the wire
        result_serializer="json",
        event_serializer="json",
        task_ignore_result=True,       # results live in the database
        task_acks_late=True,           # a message is acked when its job ends, not when received
        worker_prefetch_multiplier=1,  # a worker holds at most the one job it is running
        task_default_queue=DEFAULT_QUEUE,
        broker_transport_options=transport_options(s),
        broker_use_ssl=ssl_options(s.broker_url),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,  # gand's own one-line error must reach stderr as is
        worker_send_task_events=False,
        # No remote control (pidbox): gand never broadcasts to workers (the database carries
        # cancels and liveness), and every worker binding its pidbox queue to one shared
        # fanout exchange raced at start on the filesystem broker (see declare()).
        worker_enable_remote_control=False,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
    )
    if s.broker_url.startswith("filesystem://"):
        # An explicit transport wins over the URL's scheme: kombu's, with whole messages.
        app.conf.broker_transport = "gand.queue_files:Transport"
    return app


_app: Optional["Celery"] = None


def app() -> "Celery":
    global _app
    if _app is None:
        _app = make_app()
    return _app


def check_broker(celery: Optional["Celery"] = None) -> None:
    """Raises BrokerUnavailable unless the broker answers within a few seconds."""
    celery = celery or app()
    try:
        with celery.connection_for_write(transport_options=QUICK) as conn:
            conn.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT)
    except Exception as e:
        raise BrokerUnavailable(f"cannot reach the broker at {redact(celery.conf.broker_url)}: "
                                f"{_one_line(e)}; is it running?") from None


def wait_for_broker(timeout: float, celery: Optional["Celery"] = None) -> None:
    """Tries to reach the broker for up to `timeout` seconds (GAND_BROKER_TIMEOUT), then raises
    BrokerUnavailable: a worker started before its broker waits for it, but not forever."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check_broker(celery)
        except BrokerUnavailable as e:
            if time.monotonic() + 1 > deadline:
                raise BrokerUnavailable(f"{e} (gave up after {timeout:g}s; "
                                        f"GAND_BROKER_TIMEOUT)") from None
        time.sleep(1)


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def enqueue(job_id: str, queue: str = DEFAULT_QUEUE, celery: Optional["Celery"] = None) -> None:
    """Sends the message that makes a worker on `queue` run `job_id`."""
    celery = celery or app()
    try:
        celery.send_task(TASK, args=[job_id], queue=queue, retry=True)
    except Exception as e:
        raise BrokerUnavailable(f"could not queue job {job_id} on {redact(celery.conf.broker_url)}: "
                                f"{_one_line(e)}") from None


def declare(queues: list[str], celery: Optional["Celery"] = None) -> None:
    """Declares `queues` as a Celery worker does (each bound to a direct exchange of its name).

    The supervisor does this before it starts its children at once: kombu's filesystem
    transport creates an exchange's binding file by truncating it before it takes the lock,
    so a child reading the file at that moment found it empty and died (JSONDecodeError,
    "Unrecoverable error"). Declared once here, the children only read and append.
    """
    from kombu import Exchange, Queue

    celery = celery or app()
    with celery.connection_for_write(transport_options=QUICK) as conn:
        conn.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT)
        channel = conn.default_channel
        for name in queues:
            Queue(name, Exchange(name, type="direct"), routing_key=name, channel=channel).declare()


def queue_length(queue: str, celery: Optional["Celery"] = None) -> int:
    """Messages waiting in `queue` (not counting ones a worker has taken); BrokerUnavailable
    when the broker does not answer within a few seconds."""
    celery = celery or app()
    with celery.connection_for_read(transport_options=QUICK) as conn:
        try:
            conn.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT)
        except Exception as e:
            raise BrokerUnavailable(f"cannot reach the broker at "
                                    f"{redact(celery.conf.broker_url)}: {_one_line(e)}") from None
        try:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
        except Exception:
            return 0  # a queue nobody declared yet holds nothing


def redact(url: str) -> str:
    """A broker URL without its password, fit for messages and logs (even a malformed one)."""
    from kombu.utils.url import maybe_sanitize_url

    try:
        return maybe_sanitize_url(url)
    except Exception:  # noqa: BLE001 - a bad port, say: hide what looks like a password anyway
        from gand.store.connect import redact as redact_any

        return redact_any(url)
