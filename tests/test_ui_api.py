"""The dashboard's HTTP side against a real `gand ui` process, on SQLite and on PostgreSQL:
the JSON API has the CLI's shapes, actions need the token, --read-only refuses them, only
recorded files under the runs root are served, and bad ids or parameters get a 4xx with a
JSON error, never a 500.

No training here: the store is filled the way a worker fills it (a claim, fenced writes), so
the module runs in seconds. tests/test_ui_browser.py drives the pages with real workers.
"""
from __future__ import annotations

import json
import math
import re
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from gand.store import JobStatus

from support import (PG_URL, Dashboard, Gand, InProcessCli, drop_schema, make_env, pg_available,
                     wait_for)

TOKEN = "test-token-0123456789abcdef"


def _png(path: Path, shade: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (shade, shade, shade)).save(path)
    return path


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def setup(tmp_path_factory, request):
    if request.param == "postgres" and not pg_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    home = tmp_path_factory.mktemp("uiapi")
    g = Gand(home, make_env(home, "filesystem", request.param))
    cli = InProcessCli(g)
    store = g.store()
    config = {"variant": "gan", "loss": "bce", "steps": 4, "seed": 1, "version": 1,
              "data": [{"spec": "ring8", "type": "ring8", "arg": None, "shape": [2],
                        "info": {"spec": "ring8", "kind": "vector", "shape": [2]}}],
              "options": {"batch_size": 8, "lr": 0.001}}
    runs = home / "runs"

    # A finished job, written as a worker writes: metrics (one NaN), samples, an evaluation,
    # a best checkpoint.
    done = store.create_job(variant="gan", loss="bce", data=["ring8"], config=config,
                            total_steps=4, name="done")
    _, lease = store.claim(done.id, "w-test", 3600)
    store.add_metrics(done.id, [(s, k, 1.0 / s) for s in (1, 2, 3, 4) for k in ("d_loss", "g_loss")]
                      + [(3, "img_per_s", math.nan)], 4, fence=lease)
    samples = {s: _png(runs / done.id / "samples" / f"step_{s:08d}.png", 60 * s) for s in (2, 4)}
    arts = {s: store.add_artifact(done.id, "samples", str(p), s, fence=lease).id
            for s, p in samples.items()}
    store.add_evaluations(done.id, 4, "coverage", {"modes": 7.0}, num_samples=100, fence=lease)
    ckpt = store.add_checkpoint(done.id, 4, str(runs / done.id / "c.pt"), 10, "0" * 64, fence=lease)
    store.mark_best(done.id, ckpt.id, fence=lease)
    store.transition(done.id, JobStatus.running, JobStatus.succeeded, worker="w-test",
                     fence=lease, reason="completed")

    # Artifacts that must never be served: outside the runs root, a symlink out of it, a path
    # with .. that leaves it, and a recorded file that is gone.
    secret = _png(home.parent / f"secret-{home.name}.png", 255)
    link = runs / done.id / "samples" / "link.png"
    link.symlink_to(secret)
    dotdot = runs / done.id / ".." / ".." / ".." / secret.name
    bad = {"outside": store.add_artifact(done.id, "samples", str(secret), 5).id,
           "symlink": store.add_artifact(done.id, "samples", str(link), 6).id,
           "dotdot": store.add_artifact(done.id, "samples", str(dotdot), 7).id,
           "gone": store.add_artifact(done.id, "samples", str(runs / done.id / "nope.png"), 8).id}

    # A job a worker is running now (its lease long), and one waiting in the queue.
    running = store.create_job(variant="gan", loss="bce", data=["ring8"], config=config,
                               total_steps=1000, name="running")
    _, run_lease = store.claim(running.id, "w-live", 3600)
    # The worker that runs it, as the worker registry knows it.
    store.register_worker(name="w-live", host="gpu-7", pid=4242, queues=["gand"],
                          gpus=[{"index": 0, "uuid": "GPU-x", "name": "Fake", "memory_mb": 8192,
                                 "share": 1.0}], variants=["gan"], slot="gpu0/0")
    store.worker_seen("w-live", state="busy", job_id=running.id)
    queued = store.create_job(variant="gan", loss="ls", data=["ring8"], config=config,
                              total_steps=4, name="waiting")

    ui = Dashboard(g, token=TOKEN)
    ro = Dashboard(g, "--read-only", token=TOKEN)
    yield {"g": g, "cli": cli, "store": store, "ui": ui, "ro": ro, "done": done.id,
           "running": running.id, "run_lease": run_lease, "queued": queued.id, "arts": arts,
           "bad": bad, "samples": samples}
    ui.stop()
    ro.stop()
    g.stop_workers()
    drop_schema(home)


def _same(api_value, cli_value):
    """The API writes NaN as null (JSON has no NaN); the CLI's json.dumps writes NaN."""
    if isinstance(cli_value, float) and math.isnan(cli_value):
        return api_value is None
    if isinstance(cli_value, dict):
        return api_value.keys() == cli_value.keys() and all(_same(api_value[k], v) for k, v in cli_value.items())
    if isinstance(cli_value, list):
        return len(api_value) == len(cli_value) and all(map(_same, api_value, cli_value))
    return api_value == cli_value


def test_the_api_answers_in_the_shapes_of_the_cli_json(setup):
    ui, cli, done = setup["ui"], setup["cli"], setup["done"]
    shown = ui.get(f"/api/jobs/{done}")
    assert shown.status == 200 and shown.headers["content-type"] == "application/json"
    assert _same(shown.json(), cli.json("show", done))
    assert _same(ui.get(f"/api/jobs/{done[:8]}/metrics").json(), cli.json("metrics", done))
    board = {r["id"]: r for r in ui.get("/api/jobs").json()}
    for row in cli.json("list"):
        assert _same({k: board[row["id"]][k] for k in row}, row)
    # The board adds what the jobs page shows: latest metrics, ETA, place in the queue.
    assert board[setup["queued"]]["queue_position"] == 1
    assert board[done]["metrics"]["d_loss"] == 0.25 and board[done]["eta_s"] is None
    assert [r["id"] for r in ui.get("/api/jobs?status=queued").json()] == [setup["queued"]]
    assert {r["name"] for r in ui.get("/api/jobs?variant=gan").json()} == {"done", "running", "waiting"}
    workers = ui.get("/api/workers").json()
    assert workers == cli.json("workers")
    assert {(w["worker"], w["host"], w["state"], w["job"]) for w in workers} == {
        ("w-live", "gpu-7", "busy", setup["running"])}


def test_metrics_take_keys_since_and_points(setup):
    ui, done = setup["ui"], setup["done"]
    rows = ui.get(f"/api/jobs/{done}/metrics?keys=g_loss&since=2").json()
    assert [(r["step"], r["key"]) for r in rows] == [(3, "g_loss"), (4, "g_loss")]
    rows = ui.get(f"/api/jobs/{done}/metrics?keys=d_loss&points=2").json()
    assert [r["step"] for r in rows] == [1, 3, 4]  # every 2nd step, and always the last
    nan = ui.get(f"/api/jobs/{done}/metrics?keys=img_per_s").json()
    assert nan == [dict(nan[0], value=None)]


BAD_REQUESTS = [
    # (method, path, body, status, words of the error)
    ("GET", "/api/jobs/zz", None, 404, "hexadecimal"),
    ("GET", "/api/jobs/0123456789abcdef", None, 404, "no job"),
    ("GET", "/api/jobs/..%2F..%2Fetc%2Fpasswd", None, 404, "no such page"),
    ("GET", "/api/jobs?status=sleeping", None, 400, "unknown status"),
    ("GET", "/api/jobs/{done}/metrics?since=yesterday", None, 400, "since='yesterday'"),
    ("GET", "/api/jobs/{done}/metrics?since=-5", None, 400, "since=-5"),
    ("GET", "/api/jobs/{done}/metrics?points=1", None, 400, "points=1"),
    ("GET", "/api/jobs/{done}/metrics?points=99999999999999999999", None, 400, "points="),
    ("GET", "/api/compare", None, 400, "ids= is missing"),
    ("GET", "/api/compare?ids=zz", None, 404, "hexadecimal"),
    ("GET", "/api/compare?ids=" + ",".join("a" * i for i in range(1, 11)), None, 400, "at most 8"),
    ("GET", "/api/events?ids=zz", None, 404, "hexadecimal"),
    ("GET", "/api/events?points=many", None, 400, "points='many'"),
    ("GET", "/api/artifacts/abc", None, 404, "no such page"),
    ("GET", "/api/artifacts/-1", None, 404, "no such page"),
    ("GET", "/api/artifacts/987654", None, 404, "no artifact"),
    ("GET", "/api/artifacts/99999999999999999999999", None, 404, "no artifact"),
    ("GET", "/api/jobs/{done}/cancel", None, 405, "not allowed"),
    ("POST", "/api/jobs/zz/cancel", b"", 404, "hexadecimal"),
    ("POST", "/api/jobs/{done}/resume", b"{steps", 400, "not JSON"),
    ("POST", "/api/jobs/{done}/resume", b'{"steps": -1}', 400, "steps=-1"),
    ("POST", "/api/jobs/{done}/resume", b'{"steps": "ten"}', 400, "steps='ten'"),
    ("POST", "/api/jobs/{done}/resume", b'{"step": 10}', 400, "must be"),
    # Its recorded checkpoint is no real file: resume refuses, as `gand resume` would.
    ("POST", "/api/jobs/{done}/resume", b'{"steps": 2}', 400, "has no checkpoint that verifies"),
    ("POST", "/api/jobs/{done}/cancel", b"", 409, "only queued or running"),
]


@pytest.mark.parametrize("method,path,body,status,words", BAD_REQUESTS,
                         ids=[f"{m} {p[:50]} {b!r}" for m, p, b, _, _ in BAD_REQUESTS])
def test_bad_ids_and_parameters_get_a_4xx_with_a_json_error(setup, method, path, body, status, words):
    before = setup["g"].store().count_rows()
    headers = {"Authorization": f"Bearer {TOKEN}"} if method == "POST" else {}
    reply = setup["ui"].get(path.format(done=setup["done"]), headers=headers) if method == "GET" \
        else setup["ui"].post(path.format(done=setup["done"]), body=body, headers=headers)
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/json", reply
    assert words in reply.json()["error"], reply
    assert b"Traceback" not in reply.body
    assert setup["g"].store().count_rows() == before


def test_pages_with_bad_ids_are_404_pages_not_crashes(setup):
    ui = setup["ui"]
    for path in ("/jobs/zz", "/jobs/0123456789abcdef", "/jobs/%2e%2e", "/compare?ids=zz",
                 "/nowhere", "/static/..%2f..%2fgand.db", "/static/%2e%2e/%2e%2e/gand.db",
                 "/static/../../gand.db"):
        reply = ui.get(path)
        assert reply.status == 404, (path, reply)
        assert b"Traceback" not in reply.body and b"SQLite" not in reply.body
    assert ui.get("/compare").status == 400
    for path in ("/", f"/jobs/{setup['done']}", f"/compare?ids={setup['done']},{setup['running']}",
                 "/workers"):
        assert ui.get(path).status == 200, path


def test_only_recorded_files_under_the_runs_root_are_served(setup):
    ui = setup["ui"]
    for step, artifact_id in setup["arts"].items():
        reply = ui.get(f"/api/artifacts/{artifact_id}")
        assert reply.status == 200 and reply.headers["content-type"] == "image/png"
        assert reply.body == setup["samples"][step].read_bytes()
    for why, artifact_id in setup["bad"].items():
        reply = ui.get(f"/api/artifacts/{artifact_id}")
        assert reply.status == 404, (why, reply)
        assert reply.json()["error"].startswith(f"artifact {artifact_id}"), (why, reply)
    # A path in the URL never reaches the filesystem.
    for path in ("/api/artifacts/../../gand.db", "/api/artifacts/%2e%2e%2fgand.db",
                 "/api/artifacts//etc/passwd", "/api/artifacts/1/../../../etc/passwd"):
        reply = ui.get(path)
        assert reply.status == 404 and b"root:" not in reply.body, (path, reply)


def test_actions_need_the_token(setup):
    ui, store, queued = setup["ui"], setup["store"], setup["queued"]
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}, {"Cookie": f"token={TOKEN}"}):
        for action in ("cancel", "resume"):
            reply = ui.post(f"/api/jobs/{queued}/{action}", headers=headers, body=b"")
            assert reply.status == 403, (headers, reply)
            assert "token" in reply.json()["error"]
    assert store.get_job(queued).status == "queued"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    reply = ui.post(f"/api/jobs/{queued}/cancel", headers=auth)
    assert reply.status == 200 and reply.json() == {"id": queued, "status": "cancelled"}
    assert store.get_job(queued).status == "cancelled"
    reply = ui.post(f"/api/jobs/{queued[:10]}/resume", headers=auth, body=b'{"steps": 6}')
    assert reply.status == 200, reply
    assert reply.json() == {"id": queued, "status": "queued", "from_step": 0, "total_steps": 6}
    assert store.get_job(queued).total_steps == 6


def test_read_only_refuses_every_action_even_with_the_token(setup):
    ro, store, running = setup["ro"], setup["store"], setup["running"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for action in ("cancel", "resume"):
        reply = ro.post(f"/api/jobs/{running}/{action}", headers=auth, body=b"")
        assert reply.status == 403 and "read-only" in reply.json()["error"], reply
    assert store.get_job(running).status == "running"
    assert 'data-read-only="1"' in ro.get(f"/jobs/{running}").body.decode()
    assert ro.get(f"/api/jobs/{running}").status == 200  # reading is what it is for
    assert not any("token" in line for line in ro.lines)


def test_without_gand_ui_token_it_makes_one_and_prints_it(setup):
    ui = Dashboard(setup["g"])
    try:
        (line,) = [line for line in ui.lines if "need the token" in line]
        token = re.search(r"need the token (\S+) \(generated", line).group(1)
        assert len(token) >= 32 and token != TOKEN
        assert f"{ui.url}/?token={token}" in line
        # The printed token is let through (the refusal is the job's state, not a 403).
        reply = ui.post(f"/api/jobs/{setup['done']}/resume", body=b'{"steps": 2}',
                        headers={"Authorization": f"Bearer {token}"})
        assert reply.status == 400 and "no checkpoint that verifies" in reply.json()["error"]
        reply = ui.post(f"/api/jobs/{setup['done']}/resume", body=b'{"steps": 2}',
                        headers={"Authorization": f"Bearer {TOKEN}"})
        assert reply.status == 403
    finally:
        ui.stop()


def test_it_binds_loopback_and_refuses_other_host_names(setup):
    ui = setup["ui"]
    assert ui.url.startswith("http://127.0.0.1:")
    assert "need the token in GAND_UI_TOKEN" in ui.lines[1]
    assert not any(TOKEN in line for line in ui.lines)  # the user's secret is not echoed
    # DNS rebinding: a page at evil.example resolving to 127.0.0.1 must not read the jobs.
    assert ui.get("/api/jobs", headers={"Host": "evil.example"}).status == 400
    assert ui.get("/api/jobs", headers={"Host": f"localhost:{ui.url.rsplit(':', 1)[1]}"}).status == 200
    reply = ui.get("/")
    assert "frame-ancestors 'none'" in reply.headers["content-security-policy"]


def test_every_asset_comes_from_the_package(setup):
    ui = setup["ui"]
    page = ui.get(f"/jobs/{setup['done']}").body.decode()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs and all(r.startswith(("/", "data:")) and not r.startswith("//") for r in refs), refs
    for ref in refs:
        if ref.startswith("/static/"):
            assert ui.get(ref).status == 200, ref
    static = Path(__file__).resolve().parents[1] / "gand" / "ui" / "static"
    for f in static.glob("*.js"):
        code = f.read_text()
        assert not re.search(r"""(fetch|EventSource|src\s*=)\s*\(?\s*["'`]https?://""", code), f


def test_a_port_in_use_is_one_line(setup):
    port = setup["ui"].url.rsplit(":", 1)[1]
    code, out, err = setup["cli"]("ui", "--port", port)
    assert code == 2 and err.count("\n") == 1, (out, err)
    assert f"cannot listen on 127.0.0.1:{port}" in err


class _Events:
    """Reads a server-sent-event stream in a thread: (event, data) pairs as they arrive."""

    def __init__(self, url: str):
        self.events: list[tuple[str, object]] = []
        self.reply = urllib.request.urlopen(url, timeout=30)
        assert self.reply.headers["content-type"].startswith("text/event-stream")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        event = None
        try:
            for raw in self.reply:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    self.events.append((event, json.loads(line[6:])))
        except (OSError, ValueError, AttributeError):  # closed by close() meanwhile
            pass

    def named(self, name: str) -> list:
        return [d for e, d in self.events if e == name]

    def close(self):
        self.reply.close()


def test_one_stream_carries_the_board_progress_and_new_metrics(setup):
    ui, store, running, lease = setup["ui"], setup["store"], setup["running"], setup["run_lease"]
    store.add_metrics(running, [(1, "d_loss", 0.5), (1, "img_per_s", 100.0)], 1, fence=lease)
    stream = _Events(f"{ui.url}/api/events?jobs=1&ids={running[:9]},{setup['done']}")
    try:
        wait_for(lambda: len(stream.named("metrics")) >= 2 and stream.named("jobs"), 30, "first events")
        first = {m["job_id"]: m for m in stream.named("metrics")}
        assert first[running]["reset"] and [r["step"] for r in first[running]["rows"]] == [1, 1]
        assert first[setup["done"]]["reset"] and len(first[setup["done"]]["rows"]) == 9
        progress = [p for p in stream.named("job") if p["id"] == running][-1]
        # ETA from img/s: (1000 - 1) steps × 8 images ÷ 100 images a second.
        assert progress["step"] == 1 and progress["eta_s"] == pytest.approx(79.92)
        assert progress["counts"] == {"artifacts": 0, "checkpoints": 0, "evaluations": 0, "events": 2}
        # The worker reports more: the same stream sends only the new rows, and the new step.
        store.add_metrics(running, [(2, "d_loss", 0.4), (3, "d_loss", 0.3)], 3, fence=lease)
        new = wait_for(lambda: [m for m in stream.named("metrics")
                                if m["job_id"] == running and not m["reset"]], 30, "new rows")
        assert [(r["step"], r["value"]) for r in new[0]["rows"]] == [(2, 0.4), (3, 0.3)]
        wait_for(lambda: any(p["id"] == running and p["step"] == 3 for p in stream.named("job")),
                 30, "progress at step 3")
        wait_for(lambda: any(r["id"] == running and r["step"] == 3
                             for r in stream.named("jobs")[-1]), 30, "the board at step 3")
    finally:
        stream.close()


def test_it_stops_promptly_and_cleanly_with_streams_open(setup):
    ui = Dashboard(setup["g"], token=TOKEN)
    stream = _Events(f"{ui.url}/api/events?jobs=1&ids={setup['done']}")
    try:
        wait_for(lambda: stream.named("jobs"), 30, "the stream to start")
        started = time.monotonic()
        ui.stop()  # SIGTERM, as Ctrl-C or a service manager sends
        # uvicorn re-raises the signal once it has shut down, so the status says SIGTERM.
        assert ui.proc.returncode in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 10
        log = ui.log.read_text()
        assert "Traceback" not in log and "ERROR" not in log, log
    finally:
        stream.close()
        ui.stop()
