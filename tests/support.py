"""What the tests share: an isolated GAND_HOME, the real brokers and databases, real `gand`
processes, and one way to run the CLI in this process.

Nothing is mocked: jobs go through a real Celery broker (kombu's filesystem transport, or the
Redis server at 127.0.0.1:6379 in its own database number) into real `gand worker --burst`
processes, and the store is a real SQLite file or the PostgreSQL server at 127.0.0.1:5432.
Test modules import helpers from here (never from conftest or from one another); conftest.py
turns them into fixtures.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "tests" / "data" / "mnist"  # gand's own copy of the MNIST test split


def _redis_url() -> str:
    url = os.environ.get("GAND_TEST_REDIS", "redis://127.0.0.1:6379/13")
    # Under pytest-xdist each test process (gw0, gw1, ...) gets its own database number: a
    # test empties its database before it starts, which must not touch another's.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        base, _, db = url.rpartition("/")
        url = f"{base}/{(int(db or 0) + int(worker[2:])) % 16}"
    return url


REDIS_URL = _redis_url()
PG_URL = os.environ.get("GAND_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
CLASSIFIER_FILE = "mnist_classifier.pt"


def redis_available() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


def pg_available() -> bool:
    try:
        import sqlalchemy as sa

        sa.create_engine(PG_URL, connect_args={"connect_timeout": 2}).connect().close()
        return True
    except Exception:
        return False


def reset_process_globals() -> None:
    """Forgets what gand caches per process: settings and job service of the CLI, the plugin
    registry (its allowlist) and the Celery app (its broker). One routine for every test that
    runs gand in this process under another environment."""
    from gand import plugins, queue
    from gand.cli import context

    context.reset()
    plugins._cached = None
    queue._app = None


def no_traceback(args: tuple[str, ...], env: dict[str, str], out: str, err: str) -> None:
    """The guard every CLI call through these harnesses passes: a traceback (or the one-line
    "internal error" gand prints for a bug instead) fails the test, unless the test asked for
    tracebacks with GAND_DEBUG=1."""
    if env.get("GAND_DEBUG", "").strip() not in ("", "0"):
        return
    for marker in ("Traceback (most recent call last)", "gand: internal error"):
        if marker in out + err:
            raise AssertionError(f"`gand {' '.join(args)}` printed a {marker!r}:\n"
                                 f"stdout: {out}\nstderr: {err}")


class Gand:
    """Runs the real `gand` CLI and workers in subprocesses against one isolated setup."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.env = env
        self.workers: list[subprocess.Popen] = []

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "gand", *args], env=self.env, capture_output=True,
                           text=True, timeout=timeout, cwd=self.home)
        no_traceback(args, self.env, p.stdout, p.stderr)
        if check and p.returncode != 0:
            raise AssertionError(f"gand {' '.join(args)} exited {p.returncode}\n"
                                 f"stdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def submit(self, *args: str) -> str:
        return self.json("submit", *args)["id"]

    def worker(self, *args: str, burst: bool = True, env: Optional[dict[str, str]] = None
               ) -> subprocess.Popen:
        """A real `gand worker` process; `env` adds to (or overrides) this setup's environment."""
        log = open(self.home / f"worker-{len(self.workers)}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "gand", "worker", *(["--burst"] if burst else []), *args],
                             env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                             cwd=self.home, start_new_session=True)
        self.workers.append(p)
        return p

    def worker_log(self, i: int = -1) -> str:
        n = len(self.workers) + i if i < 0 else i
        return (self.home / f"worker-{n}.log").read_text()

    def all_worker_logs(self) -> str:
        return "\n".join(self.worker_log(i) for i in range(len(self.workers)))

    def store(self):
        """A Store on this setup's database (one per setup, closed with its workers)."""
        from gand.store import Store

        if not hasattr(self, "_store"):
            self._store = Store(self.env.get("GAND_DATABASE_URL")
                                or f"sqlite:///{self.home / 'gand.db'}")
        return self._store

    def wait_job(self, job_id: str, statuses: set[str], timeout: float = 180, step_at_least: int = 0) -> dict:
        """Polls `gand show` until the job is in one of `statuses` (and at a step)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.json("show", job_id)
            if job["status"] in statuses and job["step"] >= step_at_least:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {job['status']} at step {job['step']} after "
                                     f"{timeout}s, wanted {statuses}\n{self.all_worker_logs()}")
            time.sleep(0.3)

    def stop_workers(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if hasattr(self, "_store"):
            self._store.close()
            del self._store


class InProcessCli:
    """The real `gand` entry point called in this process, against a Gand's home and
    environment; that Gand's real workers run what it submits. An interpreter start costs
    seconds of torch import on a loaded 2-core machine; the commands and the store are the same.

    Anything else (worker, home, env, store…) is the Gand's.
    """

    def __init__(self, gand: Gand):
        self.gand = gand

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gand, name)

    def __call__(self, *args: str, env: Optional[dict[str, str]] = None) -> tuple[int, str, str]:
        """Runs `gand ARGS` (with `env` added to the environment): (exit code, stdout, stderr)."""
        from gand.cli.main import main

        from PIL import Image

        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        # gand sets PIL's process-wide pixel limit from GAND_MAX_IMAGE_PIXELS: a test's low
        # limit must not follow the next test in this process.
        saved_pixels = Image.MAX_IMAGE_PIXELS
        os.environ.clear()
        os.environ.update({**self.gand.env, **(env or {})})
        out, err = io.StringIO(), io.StringIO()
        try:
            os.chdir(self.gand.home)
            reset_process_globals()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main(list(args))
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            reset_process_globals()
            os.environ.clear()
            os.environ.update(saved_env)
            os.chdir(saved_cwd)
            Image.MAX_IMAGE_PIXELS = saved_pixels
        no_traceback(args, {**self.gand.env, **(env or {})}, out.getvalue(), err.getvalue())
        return code, out.getvalue(), err.getvalue()

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        code, out, err = self(*args)
        if check and code != 0:
            raise AssertionError(f"gand {' '.join(args)} exited {code}\nstdout: {out}\nstderr: {err}")
        return subprocess.CompletedProcess(list(args), code, out, err)

    def ok(self, *args: str) -> str:
        return self.run(*args).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def submit(self, *args: str) -> str:
        return self.json("submit", *args)["id"]

    def rows(self) -> dict[str, int]:
        return self.gand.store().count_rows()


class Dashboard:
    """A real `gand ui` process on a free port of 127.0.0.1, for one setup (a Gand)."""

    def __init__(self, g: "Gand", *args: str, token: Optional[str] = None, timeout: float = 60):
        env = {**g.env, **({"GAND_UI_TOKEN": token} if token else {})}
        self.log = g.home / f"ui-{uuid.uuid4().hex[:6]}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "gand", "ui", "--port", "0", *args],
                                     env=env, cwd=g.home, stdout=subprocess.PIPE,
                                     stderr=open(self.log, "w"), text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._said: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.token = token
        try:
            # The first line names the URL it listens on; it listens before it prints it.
            line = self._line(timeout)
            assert line.startswith("gand ui: serving http://"), (line, self.log.read_text())
            self.url = line.split()[3].rstrip("/")
            while "Ctrl-C" not in line:  # the rest of what it says at start (token, warnings)
                line = self._line(timeout)
        except BaseException:
            self.stop()  # no server left behind by a failed start
            raise

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._said.put(line.strip())

    def _line(self, timeout: float) -> str:
        try:
            line = self._said.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"gand ui said nothing in {timeout}s: "
                                 f"{self.log.read_text()}") from None
        self.lines.append(line)
        return line

    def get(self, path: str, **kw: Any) -> "HttpReply":
        return fetch("GET", self.url + path, **kw)

    def post(self, path: str, **kw: Any) -> "HttpReply":
        return fetch("POST", self.url + path, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class HttpReply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<HttpReply {self.status} {self.body[:300]!r}>"


def fetch(method: str, url: str, *, headers: Optional[dict[str, str]] = None,
         body: Optional[bytes] = None, timeout: float = 30) -> HttpReply:
    """One HTTP request sent as written (no path normalisation): status, headers, body,
    whatever the status."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        reply = conn.getresponse()
        return HttpReply(reply.status, {k.lower(): v for k, v in reply.getheaders()},
                         reply.read())
    finally:
        conn.close()


def make_env(home: Path, broker: str, database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAND_")}
    env.update({
        "GAND_HOME": str(home),
        "GAND_CONFIG": str(home / "config.toml"),
        "GAND_LEASE_SECONDS": "4",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",  # two cores: workers and the test share them
    })
    if broker == "redis":
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        env["GAND_BROKER_URL"] = REDIS_URL
    if database == "postgres":
        env["GAND_DATABASE_URL"] = database_url_for_schema(home)
    return env


def database_url_for_schema(home: Path) -> str:
    """A fresh PostgreSQL schema for one test, so tests never see each other's rows."""
    import sqlalchemy as sa

    schema = f"gand_t_{uuid.uuid4().hex[:10]}"
    eng = sa.create_engine(PG_URL)
    with eng.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    (home / "pg_schema").write_text(schema)
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


def drop_schema(home: Path) -> None:
    f = home / "pg_schema"
    if f.exists():
        import sqlalchemy as sa

        eng = sa.create_engine(PG_URL)
        with eng.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{f.read_text()}" CASCADE'))
        eng.dispose()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Polls `predicate` until it returns something true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_succeeded(g: Gand, store, job_id: str, step: int, timeout: float = 150):
    """Polls the store (cheaper than `gand show` subprocesses) until the job succeeded at `step`."""
    deadline = time.monotonic() + timeout
    while True:
        job = store.get_job(job_id)
        status = getattr(job.status, "value", job.status)
        if status == "succeeded" and job.step >= step:
            return job
        assert status not in ("failed", "cancelled"), f"{status}: {job.error}\n{g.worker_log()}"
        assert time.monotonic() < deadline, f"{status} at step {job.step}\n{g.worker_log()}"
        time.sleep(0.2)


def mnist_tensors():
    """The MNIST test split as (images, labels) tensors, read by gand's own dataset plugin."""
    import torch

    from gand import plugins

    mnist = plugins.load().dataset_type("mnist")
    info = mnist.describe(str(MNIST))
    src = mnist.load(str(MNIST), info, (1, 28, 28), torch.device("cpu"))
    return src.x, src.y


def trained_classifier(base: Path) -> str:
    """The session's MNIST classifier file under `base`, trained on first use (two epochs)."""
    import torch

    from gand.evaluation import classifier as clf

    path = base / CLASSIFIER_FILE
    if not path.exists():
        x, y = mnist_tensors()
        # Two epochs over 8000 images (2000 held out): about 97% held out in seconds, enough
        # for these tests; the default 8 epochs (98% or better) are checked in
        # test_stacked_mnist.py.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as `gand eval train-classifier` does: more only wait
        try:
            model, meta = clf.train(x, y, epochs=2, seed=0)
        finally:
            torch.set_num_threads(threads)
        assert meta["holdout_accuracy"] > 0.9, meta
        clf.save(model, meta, path)
    return str(path)


def cli(g: Gand, *args: str, env: Optional[dict[str, str]] = None) -> tuple[int, str, str]:
    """`gand ARGS` in this process with `g`'s environment: (exit code, stdout, stderr)."""
    return InProcessCli(g)(*args, env=env)


class Exploit:
    """A pickle whose unpickling runs `touch MARKER` (for the tests that prove gand refuses)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def fake_dist(site: Path, module: str, source: str, entry: Optional[str] = None) -> Path:
    """A plugin module and a distribution's metadata with its `gand` entry point in `site`,
    a folder to put on sys.path or PYTHONPATH: importlib.metadata finds it as if pip-installed.
    """
    import textwrap

    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    dist = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[gand]\n{entry or module} = {module}\n")
    return site


# --- hostile files and file systems, for the bad-input and fault tests ----------------------

def bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A tiny PNG whose header claims width×height pixels: a decompression bomb to any reader
    that trusts the header (PIL would allocate tens of GB to decode it)."""
    import struct
    import zlib

    from PIL import Image

    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR's width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def can_mount() -> bool:
    return os.geteuid() == 0 and subprocess.run(["which", "mount"], capture_output=True,
                                                check=False).returncode == 0


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "2m"):
    """A real, small tmpfs at `folder` (root only; the caller skips otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                       capture_output=True, text=True, check=False)
    if p.returncode != 0:
        import pytest

        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def remount_read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)


def fill_disk(folder: Path) -> None:
    """Writes into `folder` until its file system has no room left."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def job_with_checkpoint(store, registry, root: Path, *, variant: str = "gan",
                        data: str = "ring8", step: int = 10, status: str = "succeeded") -> str:
    """A job at `step` with one real, verifying checkpoint (of an untrained model) under
    `root`/runs, made in this process without a worker: enough for `generate` and `resume`.
    With status "running", a (fake) worker w-test@here holds it for another minute."""
    from gand.engine import checkpoint as ckpt
    from gand.engine.trainer import Run
    from gand.jobspec import build_config
    from gand.store import JobStatus

    config = build_config(registry, variant=variant, data=data, steps=step, device="cpu")
    job = store.create_job(variant=variant, loss=config.loss, data=[d.spec for d in config.data],
                           config=config.to_dict(), total_steps=step)
    job, lease = store.claim(job.id, "w-test@here", 60)
    run = Run.build(config, registry, device="cpu", load_data=False)
    path = root / "runs" / job.id / "checkpoints" / ckpt.file_name(step, lease.epoch)
    nbytes, digest = ckpt.save(path, run.state(step))
    store.add_checkpoint(job.id, step, str(path), nbytes, digest, fence=lease)
    if status == "running":  # held by worker w-test@here for another minute
        store.heartbeat(lease, 60, step)
    else:
        store.transition(job.id, JobStatus.running, JobStatus(status), worker=lease.worker,
                         fence=lease, step=step, reason="made by the test")
    return job.id


# --- refusals: what every refused command must look like -----------------------------------------

def assert_refused(code: int, out: str, err: str, message: str) -> None:
    """One line on stderr naming the problem, a non-zero exit, no traceback."""
    assert code != 0, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gand: error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in out + err


def run_gand(g: Gand, *args: str, env: Optional[dict[str, str]] = None,
             timeout: float = 60, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess with a deadline (for what could hang), `env` added
    to `g`'s environment, in `cwd` (GAND_HOME unless given); guarded against tracebacks like
    every harness call."""
    full = {**g.env, **(env or {})}
    p = subprocess.run([sys.executable, "-m", "gand", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=cwd or g.home, env=full)
    no_traceback(args, full, p.stdout, p.stderr)
    return p


def queued_messages(g: Gand) -> list[Path]:
    """Messages waiting in the embedded (filesystem) broker."""
    folder = g.home / "broker" / "queue"
    return list(folder.iterdir()) if folder.exists() else []
