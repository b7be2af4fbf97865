"""The job store on SQLite and on a real PostgreSQL server: states, transitions, leases, metrics.

Each PostgreSQL test runs in a schema of its own (gand_test_<random>, dropped afterwards), so it
never touches tables that other test files keep in the shared `test` database.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from gand.errors import GandError, NotFound, TransitionRejected, UsageError
from gand.store import ACTIVE, TERMINAL, TRANSITIONS, JobStatus, Store, migrate, parse_status
from gand.store.fence import Lease, LeaseLost
from gand.store.connect import LOCKED_RETRIES, retry_locked
from gand.store.models import Base, Job, utcnow
from gand.store.states import check_transition

PG_URL = os.environ.get("GAND_TEST_POSTGRES_URL",
                        "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
S = JobStatus
# A path from queued to each status, so that any move in the table can be tried from there.
PATH_TO = {
    S.queued: [], S.running: [S.running], S.cancelling: [S.running, S.cancelling],
    S.recovering: [S.running, S.recovering], S.succeeded: [S.running, S.succeeded],
    S.failed: [S.failed], S.cancelled: [S.cancelled],
}
TABLES = {"jobs", "job_events", "metrics", "checkpoints", "artifacts", "datasets", "evaluations",
          "workers"}


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pg_admin():
    engine = create_engine(PG_URL, poolclass=NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except OperationalError as e:
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable: {str(e.orig).strip()}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin):
    """A URL whose search_path is a schema made for this test alone."""
    schema = f"gand_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with pg_admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/home/gand.db"  # home/ does not exist yet: Store makes it
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(db_url):
    store = Store(db_url)
    yield store
    store.close()


def new_job(store: Store, **overrides) -> Job:
    spec = dict(variant="dcgan", loss="nonsaturating", data=["mnist"], config={"lr": 2e-4},
                total_steps=100)
    return store.create_job(**(spec | overrides))


def drive(store: Store, job: Job, path: list[JobStatus]) -> Job:
    for to in path:
        job = store.transition(job.id, job.status, to, worker="w-setup")
    return job


def moves(store: Store, job_id: str) -> list[tuple]:
    return [(e.from_status, e.to_status, e.worker, e.reason) for e in store.events(job_id)]


# --- states ----------------------------------------------------------------------------------

def test_transition_table_covers_every_status_and_terminal_states_only_requeue():
    assert set(TRANSITIONS) == set(JobStatus)
    assert TERMINAL == {S.succeeded, S.failed, S.cancelled}
    assert ACTIVE == {S.running, S.cancelling}
    for status in TERMINAL:
        assert TRANSITIONS[status] == {S.queued}


def test_every_move_outside_the_table_is_a_programming_error():
    for src in JobStatus:
        for dst in JobStatus:
            if dst in TRANSITIONS[src]:
                check_transition(frozenset({src}), dst)
            else:
                with pytest.raises(ValueError, match=f"to {dst.value} is not allowed"):
                    check_transition(frozenset({src}), dst)


def test_parse_status_accepts_names_and_lists_the_valid_ones():
    assert parse_status("Running ") is S.running
    with pytest.raises(UsageError, match="unknown status 'done'; valid: cancelled, .* or succeeded"):
        parse_status("done")


def test_every_allowed_move_works_and_is_recorded(store):
    for src, targets in TRANSITIONS.items():
        for dst in targets:
            job = drive(store, new_job(store), PATH_TO[src])
            moved = store.transition(job.id, src, dst, worker="w9", reason=f"{src}->{dst}")
            assert moved.status is dst
            assert store.get_job(job.id).status is dst
            assert moves(store, job.id)[-1] == (src, dst, "w9", f"{src}->{dst}")


def test_a_disallowed_move_raises_and_changes_nothing(store):
    job = new_job(store)
    before = store.count_rows()
    with pytest.raises(ValueError):
        store.transition(job.id, S.queued, S.succeeded)
    with pytest.raises(ValueError):
        store.transition(job.id, [S.running, S.succeeded], S.cancelling)  # succeeded can't
    with pytest.raises(ValueError, match="cannot set"):
        store.transition(job.id, S.queued, S.running, variant="other")
    assert store.count_rows() == before


def test_transition_from_the_wrong_state_is_rejected_and_changes_nothing(store):
    job = new_job(store)
    before = store.count_rows()
    with pytest.raises(TransitionRejected, match=f"job {job.id}: expected running but it is queued"):
        store.transition(job.id, S.running, S.succeeded)
    with pytest.raises(NotFound, match="no job 'f00'"):
        store.transition("f00", S.queued, S.running)
    assert store.count_rows() == before
    assert store.get_job(job.id).status is S.queued


# --- compare-and-set and events ------------------------------------------------------------

def test_two_workers_claiming_one_job_at_once_exactly_one_wins(store):
    for _ in range(6):
        job = new_job(store)
        barrier = threading.Barrier(2)

        def claim(worker: str):
            barrier.wait()
            try:
                return store.transition(job.id, S.queued, S.running, worker=worker)
            except TransitionRejected:
                return None

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(claim, ["w0", "w1"]))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert store.get_job(job.id).worker == winners[0].worker
        claims = [e for e in store.events(job.id) if e.to_status is S.running]
        assert [(e.from_status, e.worker) for e in claims] == [(S.queued, winners[0].worker)]


def test_lifecycle_events_and_timestamps(store):
    job = new_job(store, name="mnist-dcgan")
    lease = utcnow() + timedelta(seconds=60)
    running = store.transition(job.id, S.queued, S.running, worker="w1", lease_expires_at=lease)
    assert (running.worker, running.lease_expires_at, running.finished_at) == ("w1", lease, None)
    assert running.started_at >= job.created_at
    store.transition(job.id, S.running, S.cancelling, reason="user asked")
    assert store.get_job(job.id).worker == "w1"  # the training worker still holds it
    done = store.transition(job.id, S.cancelling, S.cancelled, worker="w1", reason="stopped", step=40)
    assert (done.worker, done.lease_expires_at, done.step) == (None, None, 40)
    assert done.finished_at >= done.started_at
    again = store.transition(job.id, S.cancelled, S.queued, reason="resume", total_steps=200)
    assert (again.finished_at, again.total_steps, again.error) == (None, 200, None)
    assert moves(store, job.id) == [
        (None, S.queued, None, "submitted"), (S.queued, S.running, "w1", None),
        (S.running, S.cancelling, None, "user asked"), (S.cancelling, S.cancelled, "w1", "stopped"),
        (S.cancelled, S.queued, None, "resume")]
    times = [e.time for e in store.events(job.id)]
    assert times == sorted(times) and all(t.utcoffset() == timedelta(0) for t in times)


def test_failure_keeps_its_error_until_requeued(store):
    job = drive(store, new_job(store), [S.running])
    failed = store.transition(job.id, [S.running, S.cancelling], S.failed, error="loss is NaN")
    assert (failed.status, failed.error) == (S.failed, "loss is NaN")
    assert moves(store, job.id)[-1][:2] == (S.running, S.failed)  # the status it really left
    assert store.transition(job.id, S.failed, S.queued).error is None


def test_to_json_has_the_documented_keys_and_is_json(store):
    job = new_job(store)
    data = job.to_json()
    assert list(data) == ["id", "name", "variant", "loss", "data", "config", "status", "step",
                          "total_steps", "queue", "priority", "worker", "lease_expires_at",
                          "recoveries",
                          "epoch", "error", "created_at", "updated_at", "started_at", "finished_at"]
    assert (data["status"], data["data"], data["config"]) == ("queued", ["mnist"], {"lr": 2e-4})
    assert data["created_at"].endswith("+00:00")
    json.dumps([data] + [e.to_json() for e in store.events(job.id)])


# --- leases --------------------------------------------------------------------------------

def test_heartbeat_renews_only_the_holding_workers_lease(store):
    job = new_job(store)
    _, lease = store.claim(job.id, "w1", 5)
    before = utcnow()
    assert store.heartbeat(lease, 60, step=7) is S.running
    held = store.get_job(job.id)
    assert held.step == 7 and held.lease_expires_at >= before + timedelta(seconds=60)
    assert store.heartbeat(Lease(job.id, "w2", lease.epoch), 600) is None  # not its worker
    assert store.heartbeat(Lease(job.id, "w1", lease.epoch + 1), 600) is None  # not its epoch
    assert store.get_job(job.id).lease_expires_at == held.lease_expires_at
    store.transition(job.id, S.running, S.cancelling)
    assert store.heartbeat(lease, 60) is S.cancelling  # how the worker learns of a cancel
    store.transition(job.id, S.cancelling, S.cancelled)
    assert store.heartbeat(lease, 60) is None
    assert store.heartbeat(Lease("0" * 32, "w1", 1), 60) is None


def test_a_claim_hands_out_a_new_epoch_and_writes_need_it(store):
    job = new_job(store)
    job, first = store.claim(job.id, "w1", 60)
    assert (job.epoch, first) == (1, Lease(job.id, "w1", 1))
    with pytest.raises(TransitionRejected):
        store.claim(job.id, "w2", 60)  # one owner at a time
    store.add_metrics(job.id, [(1, "d_loss", 0.5)], step=1, fence=first)
    # The worker is presumed dead; the reaper requeues the job and w2 claims it: epoch 2.
    store.transition(job.id, S.running, S.recovering, worker="reaper")
    store.transition(job.id, S.recovering, S.queued, worker="reaper")
    job, second = store.claim(job.id, "w2", 60)
    assert second.epoch == 2
    # Same worker name, earlier epoch (a restarted process reusing a name) is no owner either.
    for stale in (first, Lease(job.id, "w2", 1)):
        assert_refused(store, job.id, stale)
    store.add_metrics(job.id, [(2, "d_loss", 0.4)], step=2, fence=second)
    assert store.get_job(job.id).step == 2


def assert_refused(store: Store, job_id: str, stale: Lease) -> None:
    """Every kind of write a worker makes is refused under `stale`, and changes nothing."""
    before = store.count_rows()
    job = store.get_job(job_id)
    checkpoint = store.add_checkpoint(job_id, 1, "/x/step_1.pt", 1, "0" * 64)
    writes = [
        lambda: store.add_metrics(job_id, [(9, "d_loss", 0.1)], step=9, fence=stale),
        lambda: store.add_checkpoint(job_id, 9, "/x/step_9.pt", 1, "0" * 64, fence=stale),
        lambda: store.delete_checkpoint(checkpoint.id, fence=stale),
        lambda: store.mark_best(job_id, checkpoint.id, fence=stale),
        lambda: store.add_artifact(job_id, "samples", "/x/s.png", 9, fence=stale),
        lambda: store.add_evaluations(job_id, 9, "fid", {"fid": 1.0}, fence=stale),
        lambda: store.note(job_id, "stale", "w1", fence=stale),
        lambda: store.transition(job_id, ACTIVE, S.succeeded, worker="w1", fence=stale, step=9),
        lambda: store.check_lease(stale),
    ]
    for write in writes:
        with pytest.raises(LeaseLost):
            write()
    assert store.heartbeat(stale, 60, step=9) is None
    after = store.get_job(job_id)
    assert (after.status, after.step, after.lease_expires_at) == (job.status, job.step,
                                                                  job.lease_expires_at)
    assert store.count_rows() == {**before, "checkpoints": before["checkpoints"] + 1}
    assert not store.checkpoints(job_id)[-1].is_best
    store.delete_checkpoint(checkpoint.id)


def test_a_finished_job_refuses_its_last_owners_writes(store):
    job = new_job(store)
    _, lease = store.claim(job.id, "w1", 60)
    store.transition(job.id, S.running, S.succeeded, worker="w1", fence=lease, step=100)
    assert_refused(store, job.id, lease)


def test_the_jobs_step_never_goes_back(store):
    job = new_job(store)
    _, lease = store.claim(job.id, "w1", 60)
    store.add_metrics(job.id, [], step=50, fence=lease)
    store.add_metrics(job.id, [], step=40, fence=lease)  # re-training after a resume
    assert store.heartbeat(lease, 60, step=45) is S.running
    assert store.get_job(job.id).step == 50
    store.transition(job.id, S.running, S.queued, worker="w1", fence=lease, step=45)
    assert store.get_job(job.id).step == 50


def test_metrics_show_one_series_the_latest_attempt_per_step(store):
    job = new_job(store)
    _, one = store.claim(job.id, "w1", 60)
    store.add_metrics(job.id, [(s, "g_loss", 1.0) for s in range(1, 11)], step=10, fence=one)
    store.transition(job.id, S.running, S.recovering, worker="reaper")
    store.transition(job.id, S.recovering, S.queued, worker="reaper")
    _, two = store.claim(job.id, "w2", 60)  # resumed from the checkpoint at step 5
    store.add_metrics(job.id, [(s, "g_loss", 2.0) for s in range(6, 9)], step=8, fence=two)
    series = [(m.step, m.value, m.epoch) for m in store.metrics(job.id, "g_loss")]
    assert series == [(s, 1.0, 1) for s in range(1, 6)] + [(s, 2.0, 2) for s in range(6, 9)]
    assert store.latest_metrics(job.id) == {"g_loss": 2.0}  # step 8 of attempt 2, not 10 of 1
    every = store.metrics(job.id, "g_loss", superseded=True)
    assert len(every) == 13 and {m.epoch for m in every} == {1, 2}


def test_expired_leases_lists_held_jobs_whose_lease_ran_out(store):
    now = utcnow()
    stale = new_job(store)
    store.transition(stale.id, S.queued, S.running, worker="dead",
                     lease_expires_at=now - timedelta(seconds=10))
    alive = new_job(store)
    store.transition(alive.id, S.queued, S.running, worker="alive",
                     lease_expires_at=now + timedelta(seconds=60))
    new_job(store)  # queued: nobody holds it, so it has no lease to lose
    assert [j.id for j in store.expired_leases()] == [stale.id]
    later = now + timedelta(seconds=120)
    assert {j.id for j in store.expired_leases(later)} == {stale.id, alive.id}
    store.transition(stale.id, S.running, S.recovering, worker="reaper")
    assert [j.id for j in store.expired_leases()] == []


# --- finding and listing jobs -------------------------------------------------------------

def test_find_job_by_id_or_unique_prefix(store):
    ids = ["abc" + "0" * 29, "abd" + "0" * 29, "abd" + "1" * 29]
    with store.session() as s:
        for job_id in ids:
            s.add(Job(id=job_id, variant="gan", loss="bce", data=[], config={},
                      status=S.queued, total_steps=1))
    assert store.find_job(ids[1]).id == ids[1]
    assert store.find_job("abc").id == ids[0]
    assert store.find_job("ABC").id == ids[0]
    with pytest.raises(UsageError, match=f"job prefix 'abd' is ambiguous: matches {ids[1]}, {ids[2]}"):
        store.find_job("abd")
    with pytest.raises(NotFound, match="no job 'fff'"):
        store.find_job("fff")
    with pytest.raises(NotFound, match="no job 'a_%'"):
        store.find_job("a_%")
    with pytest.raises(NotFound, match="no job 'nope'"):
        store.get_job("nope")


def test_list_jobs_newest_first_and_by_status(store):
    first, second, third = (new_job(store) for _ in range(3))
    store.transition(second.id, S.queued, S.running, worker="w1")
    assert [j.id for j in store.list_jobs()] == [third.id, second.id, first.id]
    assert [j.id for j in store.list_jobs(S.queued)] == [third.id, first.id]
    assert [j.id for j in store.list_jobs(S.running)] == [second.id]


# --- metrics, checkpoints, artifacts ------------------------------------------------------

def test_add_metrics_in_bulk_and_read_the_latest(store):
    job = new_job(store)
    rows = [(step, key, step * 0.5 + i) for step in range(1000)
            for i, key in enumerate(["loss_d", "loss_g", "d_real", "d_fake", "lr"])]
    started = time.perf_counter()
    store.add_metrics(job.id, rows, step=999)
    assert time.perf_counter() - started < 5, "5000 rows should go in as one bulk insert"
    assert store.get_job(job.id).step == 999
    curve = store.metrics(job.id, "loss_g")
    assert [m.step for m in curve] == list(range(1000)) and curve[-1].value == 999 * 0.5 + 1
    assert len(store.metrics(job.id)) == 5000
    store.add_metrics(job.id, [(1000, "loss_d", float("nan")), (1000, "fid", 31.5)], step=1000)
    latest = store.latest_metrics(job.id)
    assert math.isnan(latest.pop("loss_d")) and latest.pop("fid") == 31.5
    assert latest == {"loss_g": 999 * 0.5 + 1, "d_real": 999 * 0.5 + 2,
                      "d_fake": 999 * 0.5 + 3, "lr": 999 * 0.5 + 4}
    store.add_metrics(job.id, [], step=1001)
    assert store.get_job(job.id).step == 1001


def test_metrics_for_a_missing_job_change_nothing(store):
    before = store.count_rows()
    with pytest.raises(NotFound, match="no job 'f00d'"):
        store.add_metrics("f00d", [(1, "loss_d", 0.5)], step=1)
    assert store.count_rows() == before


def test_checkpoints_in_step_order_with_one_best(store):
    job, other = new_job(store), new_job(store)
    late = store.add_checkpoint(job.id, 300, "/runs/x/ckpt-300.pt", 10_000_000_000, "c" * 64)
    early = store.add_checkpoint(job.id, 100, "/runs/x/ckpt-100.pt", 1234, "a" * 64)
    mid = store.add_checkpoint(job.id, 200, "/runs/x/ckpt-200.pt", 1234, "b" * 64)
    assert [c.id for c in store.checkpoints(job.id)] == [early.id, mid.id, late.id]
    assert store.checkpoints(job.id)[-1].bytes == 10_000_000_000  # beyond 32 bits
    assert store.mark_best(job.id, mid.id).is_best
    store.mark_best(job.id, late.id)
    assert [c.is_best for c in store.checkpoints(job.id)] == [False, False, True]
    with pytest.raises(NotFound, match=f"no checkpoint {early.id} for job '{other.id}'"):
        store.mark_best(other.id, early.id)
    store.delete_checkpoint(early.id)
    assert [c.step for c in store.checkpoints(job.id)] == [200, 300]
    with pytest.raises(NotFound, match=f"no checkpoint {early.id}"):
        store.delete_checkpoint(early.id)
    assert late.to_json()["sha256"] == "c" * 64


def test_artifacts(store):
    job = new_job(store)
    store.add_artifact(job.id, "samples", "/runs/x/samples-100.png", step=100)
    store.add_artifact(job.id, "plot", "/runs/x/losses.png")
    assert [(a.kind, a.step) for a in store.artifacts(job.id)] == [("samples", 100), ("plot", None)]
    assert store.count_rows() == {"jobs": 1, "job_events": 1, "metrics": 0, "checkpoints": 0,
                                  "artifacts": 2, "datasets": 0, "evaluations": 0, "workers": 0}


# --- migrations ---------------------------------------------------------------------------

def test_a_fresh_database_is_migrated_to_head_matching_the_models(store):
    with store.engine.connect() as conn:
        assert migrate.current_revisions(conn) == migrate.head_revisions() == {migrate.HEAD}
        # Autogenerate would write nothing: the migrations create exactly what the models say.
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_upgrading_a_database_at_head_is_one_cheap_read(store):
    statements = []
    event.listen(store.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *args: statements.append(statement))
    migrate.upgrade(store.engine)
    Store(store.url).close()
    assert statements and all(s.lstrip().upper().startswith(("SELECT", "PRAGMA"))
                              for s in statements), statements
    assert len(statements) <= 3, statements


def test_a_database_from_a_newer_gand_is_refused(db_url):
    Store(db_url).close()
    engine = create_engine(db_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(GandError, match="revision 9999, which this gand does not know"):
        Store(db_url)


def test_processes_starting_at_once_on_a_fresh_database_migrate_it_once(db_url):
    code = "import sys; from gand.store import Store; Store(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url], stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    engine = create_engine(db_url, poolclass=NullPool)
    with engine.connect() as conn:
        assert migrate.current_revisions(conn) == migrate.head_revisions()
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()
    assert set(Store(db_url).count_rows()) == TABLES


# --- concurrent writers ----------------------------------------------------------------

def test_many_writers_at_once_do_not_fail(db_url):
    # Two stores are two connection pools, as two processes would have.
    stores = [Store(db_url), Store(db_url)]
    jobs = [new_job(stores[0]) for _ in range(4)]
    leases = [stores[0].claim(job.id, f"w{i}", 30)[1] for i, job in enumerate(jobs)]

    def work(i: int) -> None:
        store, job, lease = stores[i % 2], jobs[i % 4], leases[i % 4]
        for step in range(15):
            store.add_metrics(job.id, [(step, f"k{i}", 1.0), (step, f"j{i}", 2.0)], step=step,
                              fence=lease)
            assert store.heartbeat(lease, 30) is S.running
            new_job(store, name=f"t{i}-{step}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    counts = stores[0].count_rows()
    assert (counts["metrics"], counts["jobs"]) == (8 * 15 * 2, 4 + 8 * 15)
    for store in stores:
        store.close()


def test_a_write_waits_for_another_process_holding_the_sqlite_lock(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/gand.db")
    job = new_job(store)
    other = sqlite3.connect(tmp_path / "gand.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(0.3, other.rollback)
    release.start()
    try:
        store.add_metrics(job.id, [(1, "loss_d", 0.1)], step=1)
    finally:
        release.join()
        other.close()
    assert store.get_job(job.id).step == 1


def test_retry_locked_retries_only_database_is_locked():
    calls = []

    @retry_locked
    def flaky(fails: int, message: str) -> str:
        calls.append(message)
        if len(calls) <= fails:
            raise OperationalError("UPDATE jobs", {}, sqlite3.OperationalError(message))
        return "done"

    assert flaky(2, "database is locked") == "done" and len(calls) == 3
    calls.clear()
    with pytest.raises(OperationalError, match="no such table"):
        flaky(1, "no such table: jobs")
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(OperationalError, match="database is locked"):
        flaky(LOCKED_RETRIES, "database is locked")
    assert len(calls) == LOCKED_RETRIES


def test_unsupported_database_urls_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="unsupported database 'mysql'"):
        Store("mysql://localhost/gand")
    with pytest.raises(UsageError, match="is not valid"):
        Store("not a url")


def test_named_datasets_evaluations_and_notes(store):
    from gand.errors import NotFound, UsageError

    store.add_dataset("faces", "folder:/data/faces")
    assert store.get_dataset("faces").spec == "folder:/data/faces"
    with pytest.raises(UsageError, match="taken"):
        store.add_dataset("faces", "x")
    assert [d.name for d in store.list_datasets()] == ["faces"]
    store.remove_dataset("faces")
    with pytest.raises(NotFound, match="no dataset named 'faces'"):
        store.remove_dataset("faces")

    job = store.create_job(variant="gan", loss="bce", data=["ring8"], config={}, total_steps=10)
    store.add_evaluations(job.id, 5, "coverage", {"modes": 8.0, "hq": 0.9}, num_samples=2500,
                          reference="ring8")
    assert {(e.key, e.value, e.num_samples) for e in store.evaluations(job.id)} == {
        ("modes", 8.0, 2500), ("hq", 0.9, 2500)}
    event = store.note(job.id, "collapse warning")
    assert (event.from_status, event.to_status, event.reason) == ("queued", "queued", "collapse warning")
    store.delete_job(job.id)
    assert store.count_rows()["evaluations"] == 0 and store.count_rows()["jobs"] == 0


def test_a_database_at_0001_upgrades_keeping_its_rows(tmp_path):
    """A database made by the first release gains the later tables without losing jobs."""
    import sqlalchemy as sa
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(sa.text(
            "INSERT INTO jobs (id, variant, loss, data, config, status, step, total_steps, queue, "
            "recoveries, created_at, updated_at) VALUES ('ab', 'gan', 'bce', '[]', '{}', 'queued', "
            "0, 5, 'gand', 0, '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')"))
    engine.dispose()
    store = Store(url)
    assert store.get_job("ab").variant == "gan"
    assert store.list_datasets() == []
    store.close()


def test_a_stopped_worker_stays_stopped_whatever_heartbeat_arrives_late(store):
    """A worker writes "stopped" as it exits; a heartbeat its fleet thread had in flight (slow
    on a loaded machine) used to land after it and show the worker idle for good."""
    store.register_worker(name="w-1", host="h", pid=1, queues=["gand"], gpus=[], variants=["gan"])
    store.worker_seen("w-1", state="busy", job_id=None)
    store.worker_seen("w-1", state="stopped", job_id=None)
    store.worker_seen("w-1", state="idle", job_id=None)  # the late heartbeat
    (w,) = [w for w in store.workers() if w.name == "w-1"]
    assert w.state == "stopped"
    store.register_worker(name="w-1", host="h", pid=1, queues=["gand"], gpus=[], variants=["gan"])  # started again
    store.worker_seen("w-1", state="busy", job_id=None)
    (w,) = [w for w in store.workers() if w.name == "w-1"]
    assert w.state == "busy"
