"""Every kind of bad input, table-driven: one line on stderr, a non-zero exit, no traceback, and
nothing changed — the store's row counts are the same and no message is queued.

The CLI runs in this process (`cli` from support: process globals reset, the test's
environment), so the whole table takes seconds; a few cases go through the real `gand`
entry point in a subprocess to show the in-process runs stand for it.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from support import Gand, cli, make_env
from PIL import Image

A = "abc1230000000000000000000000000a"  # two jobs whose ids share the prefix "abc123"
B = "abc1230000000000000000000000000b"
Q = "dd00000000000000000000000000000d"  # a queued job
NONE = "ee00000000000000000000000000000e"  # a succeeded job without checkpoints


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A store with known jobs (inserted through Store) and bad datasets on disk."""
    from gand.store import JobStatus
    from gand.store.models import Checkpoint, Event, Job, utcnow

    root = tmp_path_factory.mktemp("bad")
    g = Gand(root, make_env(root, "filesystem", "sqlite"))
    assert cli(g, "list")[0] == 0
    from gand import plugins
    from gand.jobspec import build_config

    config = build_config(plugins.load(), variant="gan", data="ring8", steps=10,
                          device="cpu").to_dict()
    now = utcnow()
    with g.store().session() as s:
        for job_id, status in ((A, JobStatus.succeeded), (B, JobStatus.failed),
                               (Q, JobStatus.queued), (NONE, JobStatus.succeeded)):
            s.add(Job(id=job_id, variant="gan", loss="bce", data=["ring8"], config=config,
                      status=status, step=10, total_steps=10, queue="gand", recoveries=0,
                      created_at=now, updated_at=now))
            s.flush()
            s.add(Event(job_id=job_id, time=now, from_status=None, to_status=status, reason="test"))
        s.add(Checkpoint(job_id=A, step=10, path=str(root / "gone.pt"), bytes=1, sha256="0" * 64,
                         time=now, is_best=False))
    (root / "empty").mkdir()
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("not an image")
    (root / "junk" / "fake.png").write_text("not a png either")
    (root / "badmnist").mkdir()
    (root / "badmnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    (root / "gray").mkdir()
    for i in range(2):
        Image.new("L", (28, 28)).save(root / "gray" / f"{i}.png")
    (root / "config-bad.toml").write_text("colour = 'red'\n")
    return g


S = ["submit", "gan", "--data", "ring8"]
CASES = [
    # submit: every option with a wrong type or range
    (["submit", "nope", "--data", "ring8"], "unknown variant 'nope'"),
    (["submit", "gan"], "Missing option '--data'"),
    (S + ["--steps", "ten"], "--steps"),
    (S + ["--steps", "0"], "--steps 0 is invalid"),
    (S + ["--steps", "-1"], "--steps -1 is invalid"),
    (S + ["--batch-size", "0"], "--batch-size 0 is invalid"),
    (S + ["--batch-size", "1.5"], "--batch-size"),
    (S + ["--lr", "-1"], "--lr -1.0 is invalid"),
    (S + ["--lr", "fast"], "--lr"),
    (S + ["--lr", "0"], "--lr 0.0 is invalid"),
    (S + ["--seed", "-1"], "--seed -1 is invalid"),
    (S + ["--seed", "x"], "--seed"),
    (S + ["--device", "tpu"], "--device 'tpu' is invalid"),
    (S + ["--device", "cuda:x"], "--device 'cuda:x' is invalid"),
    (S + ["--queue", "a/b"], "--queue 'a/b' is invalid"),
    (S + ["--queue", ""], "--queue '' is invalid"),
    (S + ["--checkpoint-every", "-1"], "--checkpoint-every -1 is invalid"),
    (S + ["--sample-every", "x"], "--sample-every"),
    (S + ["--sample-every", "-3"], "--sample-every -3 is invalid"),
    (S + ["--name", ""], "--name '' is invalid"),
    (S + ["--name", "a\nb"], "--name 'a\\nb' is invalid"),
    (S + ["--name", "x" * 201], "is invalid; expected 1-200 printable characters"),
    (S + ["--max-recoveries", "-1"], "--max-recoveries -1 is invalid"),
    (S + ["--max-recoveries", "many"], "--max-recoveries"),
    (S + ["--keep-checkpoints", "-2"], "--keep-checkpoints -2 is invalid"),
    (S + ["--on-diverge", "explode"], "--on-diverge 'explode' is invalid; expected fail or rollback"),
    (S + ["--loss", "nope"], "unknown loss 'nope'"),
    (S + ["--loss", "hinge+"], "--loss 'hinge+' has an empty part"),
    (S + ["--set", "hidden"], "--set 'hidden' is malformed"),
    (S + ["--set", "hidden=big"], "--set hidden=big"),
    (S + ["--set", "colour=red"], "colour"),
    (S + ["--set", "1x=2"], "--set '1x=2' is malformed"),
    (S + ["--eval-every", "-1"], "--eval-every -1 is invalid"),
    (S + ["--best-by", "fid"], "--best-by"),
    (S + ["--bogus"], "No such option: --bogus"),
    # datasets: unknown, missing, empty, unreadable, not images, wrong kind, mismatched domains
    (["submit", "gan", "--data", "ring9"], "unknown dataset 'ring9'"),
    (["submit", "gan", "--data", ""], "empty dataset spec"),
    (["submit", "gan", "--data", "ring8,ring8"], "takes 1 dataset(s)"),
    (["submit", "dcgan", "--data", "/no/such/folder"], "/no/such/folder"),
    (["submit", "dcgan", "--data", "{root}/empty"], "has no readable images"),
    (["submit", "dcgan", "--data", "{root}/junk"], "has no readable images"),
    (["submit", "dcgan", "--data", "folder:{root}/junk/notes.txt"], "is not a folder"),
    (["submit", "dcgan", "--data", "mnist"], "dataset mnist needs an argument"),
    (["submit", "dcgan", "--data", "mnist:/no/such/mnist"], "/no/such/mnist"),
    (["submit", "dcgan", "--data", "mnist:{root}/badmnist"], "badmnist"),
    (["submit", "dcgan", "--data", "ring8"], "dcgan takes image data"),
    (["submit", "cyclegan", "--data", "{root}/gray"], "cyclegan takes 2 dataset(s)"),
    (["submit", "cyclegan", "--data", "{root}/gray,ring8"], "cyclegan takes image data"),
    # list, show, follow, cancel, resume, metrics: unknown, malformed and ambiguous job ids
    (["list", "--status", "sleeping"], "unknown status 'sleeping'"),
    (["list", "--json", "extra"], "unexpected extra argument"),
    (["show", "ffff"], "no job 'ffff'"),
    (["show", "zz"], "job ids are hexadecimal"),
    (["show", "abc123"], "job prefix 'abc123' is ambiguous"),
    (["show", ""], "job ids are hexadecimal"),
    (["show"], "Missing argument"),
    (["follow", "abc12"], "is ambiguous"),
    (["follow", "../etc"], "job ids are hexadecimal"),
    (["cancel", "ffff"], "no job 'ffff'"),
    (["cancel", A], "only queued or running jobs can be cancelled"),
    (["resume", "ffff"], "no job 'ffff'"),
    (["resume", Q], "nothing to resume"),
    (["resume", A, "--steps", "0"], "--steps 0 is invalid"),
    (["resume", A, "--steps", "five"], "--steps"),
    (["resume", A], "already reached step 10"),
    (["metrics", "ffff"], "no job 'ffff'"),
    (["metrics", "abc123"], "is ambiguous"),
    # generate: unknown checkpoint selectors, bad counts, missing checkpoint files
    (["generate", A, "--checkpoint", "nope"], "--checkpoint 'nope' is invalid"),
    (["generate", A, "--checkpoint", "999"], "has no checkpoint at step 999"),
    (["generate", A, "--checkpoint", "best"], "has no best checkpoint"),
    (["generate", A], "gone.pt is missing"),
    (["generate", NONE], "has no checkpoint yet"),
    (["generate", A, "--n", "0"], "--n 0 is invalid"),
    (["generate", A, "--n", "many"], "--n"),
    (["generate", "abc123"], "is ambiguous"),
    # worker, workers, plugins, config, reap
    (["worker", "--concurrency", "0"], "--concurrency 0 is invalid"),
    (["worker", "--concurrency", "two"], "--concurrency"),
    (["worker", "--queues", ","], "--queues ',' is invalid"),
    (["worker", "--queues", "a b"], "--queues 'a b' is invalid"),
    (["worker", "--loglevel", "LOUD"], "--loglevel 'LOUD' is invalid"),
    (["plugins", "--verbose"], "No such option: --verbose"),
    (["config", "--json", "x"], "unexpected extra argument"),
    (["reap", "now"], "unexpected extra argument"),
    (["workers", "--timeout", "1"], "No such option: --timeout"),
    (["submit", "gan", "--data", "ring8", "--priority", "10"], "--priority 10 is invalid; expected 0 to 9"),
    (["submit", "gan", "--data", "ring8", "--gpus", "2"], "--gpus 2 is invalid; expected 0 (a CPU job) or 1"),
    (["submit", "gan", "--data", "ring8", "--gpus", "0", "--min-gpu-mem", "8"], "--min-gpu-mem 8 asks for a GPU, but --gpus 0"),
    (["submit", "gan", "--data", "ring8", "--min-gpu-mem", "-1"], "--min-gpu-mem -1.0 is invalid"),
    (["worker", "--jobs-per-gpu", "0"], "--jobs-per-gpu 0 is invalid; expected 1 to 16"),
    (["worker", "--gpus", "zero"], "--gpus 'zero' is invalid; expected all, none or GPU indexes"),
    (["worker", "--gpus", "all"], "--gpus all: this machine has no GPU"),
    (["worker", "--gpus", "3"], "--gpus 3: no GPU 3 on this machine (GPUs: none)"),
    (["nosuchcommand"], "No such command 'nosuchcommand'"),
]


def _args(case: list[str], root: Path) -> list[str]:
    return [a.replace("{root}", str(root)) for a in case]


def _queued(g) -> list[Path]:
    folder = g.home / "broker" / "queue"
    return list(folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_and_changes_nothing(home, args, message):
    before = home.store().count_rows()
    code, out, err = cli(home, *_args(args, home.home))
    assert code != 0, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gand: error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert home.store().count_rows() == before
    assert not _queued(home), "nothing may be queued"


def test_bad_config_file_and_database_url(home):
    for env, message in (({"GAND_CONFIG": str(home.home / "config-bad.toml")}, "unknown key 'colour'"),
                         ({"GAND_DATABASE_URL": "mysql://x/y"}, "unsupported database 'mysql'"),
                         ({"GAND_DATABASE_URL": "::::"}, "is not valid")):
        code, _, err = cli(home, "list", env=env)
        assert code != 0 and len(err.strip().splitlines()) == 1 and message in err, err
        assert "Traceback" not in err


REAL = [
    (S + ["--steps", "ten"], "(got 'ten')"),
    (["show", "abc123"], "is ambiguous"),
]


@pytest.mark.parametrize("args,message", REAL, ids=[" ".join(a)[:40] for a, _ in REAL])
def test_bad_input_through_the_real_entry_point(home, args, message):
    before = home.store().count_rows()
    p = home.run(*args, check=False, timeout=60)
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(lines) == 1 and message in lines[0], p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert home.store().count_rows() == before and not _queued(home)


def test_a_job_name_never_becomes_a_path(home):
    """`--name` is a label: the run folder is named by the job id, so '../' in a name is inert."""
    code, out, err = cli(home, *S, "--name", "../../escape", "--steps", "5", "--json")
    assert code == 0, err
    import json

    job_id = json.loads(out)["id"]
    from gand.settings import Settings

    assert Settings(home.home, "", "", ()).run_dir(job_id) == home.home / "runs" / job_id
    assert cli(home, "cancel", job_id)[0] == 0  # leave nothing for later cases
    for f in _queued(home):
        f.unlink()
