"""Every kind of bad input, table-driven: one line on stderr, a non-zero exit, no traceback, and
nothing changed — the store's row counts are the same and no message is queued.

The CLI runs in this process (`cli` from support: process globals reset, the test's
environment), so the whole table takes seconds; a few cases go through the real `gand`
entry point in a subprocess to show the in-process runs stand for it, and every case that
could hang (a FIFO where a file is expected, a server that never answers) runs in a
subprocess with a deadline.

The classes of issue 9, each with its table or test here (docs/reliability.md lists them):
nothing hangs on a FIFO (HANGS), values the database cannot hold (DB_CASES, on SQLite and
PostgreSQL), jobs that cannot work (CASES: optimizer, data that does not decode, decompression
bombs), every setting checked where read (SETTINGS × commands), output paths (CASES:
generate), messages naming what was typed (CASES: --batch-size). A store or broker that
cannot be used, and servers that never answer, are in test_unavailable.py.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from support import (MNIST, PG_URL, Gand, assert_refused, bomb_png, cli, drop_schema,
                     job_with_checkpoint, make_env, no_traceback, pg_available, queued_messages,
                     run_gand)
from PIL import Image

from gand.errors import UsageError

A = "abc1230000000000000000000000000a"  # two jobs whose ids share the prefix "abc123"
B = "abc1230000000000000000000000000b"
Q = "dd00000000000000000000000000000d"  # a queued job
NONE = "ee00000000000000000000000000000e"  # a succeeded job without checkpoints


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A store with known jobs (inserted through Store) and bad datasets on disk."""
    from gand import plugins
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
    # Data that passes a glance but does not decode, or would hang or flood a reader.
    (root / "fifo" / "a").mkdir(parents=True)
    os.mkfifo(root / "fifo" / "a" / "x.png")  # the only "image": reading it would block
    (root / "truncmnist").mkdir()
    images = (MNIST / "t10k-images-idx3-ubyte.gz").read_bytes()
    (root / "truncmnist" / "t10k-images-idx3-ubyte.gz").write_bytes(images[: len(images) // 2])
    (root / "truncmnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(
        (MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (root / "badlabels").mkdir()
    (root / "badlabels" / "t10k-images-idx3-ubyte.gz").write_bytes(images)
    labels = bytearray(gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[8] = 42
    (root / "badlabels" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    (root / "bomb").mkdir()
    Image.new("L", (28, 28)).save(root / "bomb" / "fine.png")
    bomb_png(root / "bomb" / "huge.png")  # 10^10 pixels claimed by an 80-byte file
    (root / "big").mkdir()
    Image.new("L", (64, 64)).save(root / "big" / "a.png")  # over GAND_MAX_IMAGE_PIXELS=1000
    (root / "outdir.npy").mkdir()
    (root / "afile").write_text("a file, not a folder")
    os.mkfifo(root / "out.fifo.png")
    g.trained = job_with_checkpoint(g.store(), plugins.load(), root)
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
    # anti-collapse tricks and presets (gand.engine.tricks, gand.presets)
    (S + ["--set", "pack=3", "--batch-size", "64"],
     "--set pack=3: the batch size 64 is not a multiple of 3"),
    (S + ["--set", "pack=0"], "--set pack=0: must be at least 1"),
    (S + ["--set", "mbstd=1"], "--set mbstd=1: a group of one has no spread"),
    (S + ["--set", "mbstd=5", "--batch-size", "64", "--set", "pack=1"],
     "--set mbstd=5: D sees batches of 64, which do not split into groups of 5"),
    (S + ["--set", "d_norm=batch"], "--set d_norm=batch: expected none or spectral"),
    (S + ["--set", "instance_noise=-0.1"], "--set instance_noise=-0.1: must be at least 0"),
    (S + ["--set", "lr_decay=2"], "--set lr_decay=2: must be at most 1"),
    (["submit", "began", "--data", "ring8", "--set", "pack=2"],
     "--set pack=2: variant began trains its D its own way"),
    (["submit", "cgan", "--data", f"mnist:{MNIST}", "--set", "pack=2"],
     "variant cgan's D judges each sample with its label"),
    (S + ["--set", "components=8", "--set", "nz=1"],
     "components=8 needs nz of at least 2 (the first latent picks the component); got nz=1"),
    (S + ["--set", "components=-1"], "--set components=-1: must be at least 0"),
    (S + ["--preset", "fast"], "--preset 'fast' is unknown; presets: default or lecture"),
    (["submit", "dcgan", "--data", f"mnist:{MNIST}", "--preset", "lecture"],
     "--preset lecture is a recipe for gan, not dcgan"),
    (S + ["--eval-every", "-1"], "--eval-every -1 is invalid"),
    (S + ["--best-by", "fid"], "--best-by"),
    (S + ["--bogus"], "No such option: --bogus"),
    # datasets: unknown, missing, empty, unreadable, not images, wrong kind, mismatched domains
    (["submit", "gan", "--data", "ring9"], "unknown dataset 'ring9'"),
    (["submit", "gan", "--data", ""], "empty dataset spec"),
    (["submit", "gan", "--data", "ring8,ring8"], "takes 1 dataset(s)"),
    (["submit", "dcgan", "--data", "/no/such/folder"], "/no/such/folder"),
    (["submit", "dcgan", "--data", "{root}/empty"], "has no readable images"),
    # A bare path is a folder of images; MNIST's IDX folder names its own type.
    (["submit", "dcgan", "--data", str(MNIST)], f"has no images but MNIST IDX files; use mnist:{MNIST}"),
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
    (["resume", A], "has no checkpoint that verifies"),
    (["resume", A], "--from-scratch"),
    (["resume", "{trained}"], "already reached step 10"),
    (["resume", "{trained}", "--steps", "3000000000"], "--steps 3000000000 is invalid"),
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
    (["generate", "{trained}", "--out", "{root}/outdir.npy"], "outdir.npy is a folder"),
    (["generate", "{trained}", "--out", "{root}/afile/x.npy"], "afile is a file"),
    (["generate", "{trained}", "--out", "{root}/afile/sub/x.npy"], "afile is a file"),
    (["generate", "{trained}", "--out", "{root}/out.fifo.png"], "is not a regular file"),
    (["generate", "{trained}", "--out", "{root}/afile"], "is not a folder"),
    (["generate", "{trained}", "--out", "{root}/x.txt"], "vector samples are written as .npy"),
    (["generate", "{trained}", "--truncation", "nan"], "--truncation nan is invalid"),
    (["generate", "{trained}", "--seed", "-1"], "--seed -1 is invalid"),
    (["generate", "{trained}", "--device", "tpu"], "--device 'tpu' is invalid"),
    (["metrics", "{trained}", "--plot", "{root}/afile/p.png"], "afile is a file"),
    (["interpolate", "{trained}", "--out", "{root}/afile/i.png"], "afile is a file"),
    # values the database could not hold, refused with the flag the user typed
    (S + ["--steps", "99999999999999999999"], "--steps 99999999999999999999 is invalid"),
    (S + ["--steps", "3000000000"], "expected an integer from 1 to 2147483647"),
    (S + ["--batch-size", "99999999999"], "--batch-size 99999999999: must be at most 1000000"),
    (S + ["--lr", "inf"], "--lr inf is invalid"),
    (S + ["--lr", "nan"], "--lr nan is invalid"),
    (S + ["--lr", "1e400"], "--lr inf is invalid"),
    (S + ["--set", "lr=inf"], "--set lr=inf: expected a finite number"),
    (S + ["--set", "lr_d=-inf"], "--set lr_d=-inf: expected a finite number"),
    (S + ["--set", "ema=nan"], "--set ema=nan: expected a finite number"),
    (S + ["--set", "d_steps=99999999999999999999999"], "must be at most 100"),
    (S + ["--seed", "99999999999999999999999"], "--seed 99999999999999999999999 is invalid"),
    (S + ["--checkpoint-every", "99999999999999"], "--checkpoint-every 99999999999999 is invalid"),
    (S + ["--eval-every", "99999999999999"], "--eval-every 99999999999999 is invalid"),
    (S + ["--max-recoveries", "99999999999999999999"], "--max-recoveries"),
    # jobs that cannot work: what the optimizer or the data would refuse in the worker
    (S + ["--set", "beta1=1"], "--set beta1=1: must be below 1"),
    (S + ["--set", "beta2=1.5"], "--set beta2=1.5: must be below 1"),
    (["submit", "dcgan", "--data", "mnist:{root}/truncmnist"], "is damaged after"),
    (["submit", "dcgan", "--data", "mnist:{root}/badlabels"], "holds label 42"),
    (["submit", "dcgan", "--data", "{root}/bomb"], "over gand's limit of 64000000"),
    (["data", "add", "bombs", "{root}/bomb"], "huge.png' has 10000000000 pixels"),
    (["submit", "dcgan", "--data", "mnist:{root}/bad\x00mnist"], "control character"),
    (["submit", "dcgan", "--data", "{root}/fifo"], "has no readable images"),
    (["data", "add", "fifo", "{root}/fifo"], "has no readable images"),
    # worker, workers, plugins, config, reap
    (["worker", "--concurrency", "0"], "--concurrency 0 is invalid"),
    (["worker", "--concurrency", "two"], "--concurrency"),
    (["worker", "--queues", ","], "--queues ',' is invalid"),
    (["worker", "--queues", "a b"], "--queues 'a b' is invalid"),
    (["worker", "--loglevel", "LOUD"], "--loglevel 'LOUD' is invalid"),
    (["plugins", "--verbose"], "No such option: --verbose"),
    (["plugins", "options", "gann"], "unknown variant 'gann'; installed: began"),
    (["plugins", "options", "gan", "--data", "ring9"], "unknown dataset 'ring9'"),
    (["plugins", "options", "gan", "--loss", "hinge+"], "--loss 'hinge+' has an empty part"),
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


def _args(case: list[str], g: Gand) -> list[str]:
    return [a.replace("{root}", str(g.home)).replace("{trained}", g.trained) for a in case]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if not p.name.startswith("gand.db")}


_queued = queued_messages


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_and_changes_nothing(home, args, message):
    before, files = home.store().count_rows(), _files(home.home)
    code, out, err = cli(home, *_args(args, home), env={"GAND_MAX_IMAGE_PIXELS": ""})
    assert_refused(code, out, err, message)
    assert home.store().count_rows() == before
    assert not _queued(home), "nothing may be queued"
    assert _files(home.home) == files, "no file or folder may be created"


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


# --- every setting is checked where it is read, for every command -----------------------------

SETTINGS = [
    ({"GAND_LEASE_SECONDS": "abc"}, "GAND_LEASE_SECONDS='abc' is invalid"),
    ({"GAND_LEASE_SECONDS": "-1"}, "GAND_LEASE_SECONDS='-1' is invalid"),
    ({"GAND_STALL_SECONDS": "inf"}, "GAND_STALL_SECONDS='inf' is invalid"),
    ({"GAND_BROKER_TIMEOUT": "soon"}, "GAND_BROKER_TIMEOUT='soon' is invalid"),
    ({"GAND_MAX_IMAGE_PIXELS": "0"}, "GAND_MAX_IMAGE_PIXELS='0' is invalid"),
    ({"GAND_BROKER_URL": "redis://:pw@127.0.0.1:abc/0"}, "the port must be a number"),
    ({"GAND_BROKER_URL": "redis://127.0.0.1:6379/x"}, "Redis database 'x' must be a number"),
    ({"GAND_BROKER_URL": "foo://x"}, "unknown transport 'foo'"),
    ({"GAND_DATABASE_URL": "postgresql://u:pw@127.0.0.1:abc/x"}, "is not valid"),
    ({"GAND_DATABASE_URL": "mysql://x/y"}, "unsupported database 'mysql'"),
    ({"GAND_CONFIG": "{root}/config-bad.toml"}, "unknown key 'colour'"),
    ({"GAND_CONFIG": "{root}/config-latin1.toml"}, "is not valid UTF-8"),
    ({"GAND_CONFIG": "{root}/config-number.toml"}, "home = 5 is invalid; expected a string"),
    ({"GAND_CONFIG": "{root}/empty"}, "is a folder; expected a TOML file"),
    ({"GAND_HOME": "{root}/afile"}, "is not a folder"),
]
COMMANDS = [["list"], ["show", "ffff"], ["config"], ["data", "list"], ["reap"],
            S + ["--steps", "5"], ["resume", "ffff"], ["generate", "ffff"]]
# The worker in a subprocess (one that wrongly accepted a setting would run forever): the
# settings the issue found it crashing or hanging on.
WORKER_SETTINGS = [SETTINGS[i] for i in (0, 1, 5, 7, 11)]


@pytest.fixture(scope="module")
def settings_home(home):
    (home.home / "config-latin1.toml").write_bytes("home = 'caf\xe9'\n".encode("latin-1"))
    (home.home / "config-number.toml").write_text("home = 5\n")
    return home


@pytest.mark.parametrize("env,message", SETTINGS, ids=[" ".join(e)[:40] for e, _ in SETTINGS])
@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_bad_setting_is_one_line_for_every_command(settings_home, env, message, command):
    home = settings_home
    env = {k: v.replace("{root}", str(home.home)) for k, v in env.items()}
    before = home.store().count_rows()
    code, out, err = cli(home, *command, env=env)
    assert_refused(code, out, err, message)
    assert "pw" not in err, "passwords are never shown"
    assert home.store().count_rows() == before and not _queued(home)


@pytest.mark.parametrize("env,message", WORKER_SETTINGS,
                         ids=[" ".join(e)[:40] for e, _ in WORKER_SETTINGS])
def test_a_bad_setting_stops_the_worker_in_one_line(settings_home, env, message):
    home = settings_home
    env = {k: v.replace("{root}", str(home.home)) for k, v in env.items()}
    p = run_gand(home, "worker", "--burst", env=env, timeout=60)
    assert_refused(p.returncode, p.stdout, p.stderr, message)
    assert p.stderr.count("gand: error") == 1  # once, not once per process or thread


def test_a_config_path_that_is_a_fifo_is_refused_without_opening_it(home):
    fifo = home.home / "config.fifo"
    os.mkfifo(fifo)
    p = run_gand(home, "list", env={"GAND_CONFIG": str(fifo)})
    assert_refused(p.returncode, p.stdout, p.stderr, "is not a regular file")


def test_the_pixel_limit_is_a_setting(home):
    """GAND_MAX_IMAGE_PIXELS lowers the limit: a 64×64 image is then too large, one line."""
    code, out, err = cli(home, "submit", "dcgan", "--data", str(home.home / "big"),
                         env={"GAND_MAX_IMAGE_PIXELS": "1000"})
    assert_refused(code, out, err, "has 4096 pixels, over gand's limit of 1000")


# --- nothing hangs: special files where files are expected, servers that never answer ---------

HANGS = [
    # (environment, arguments, message): each in a subprocess with a deadline
    ({}, ["submit", "dcgan", "--data", "./fifo", "--steps", "5"], "has no readable images"),
    ({}, ["data", "add", "fifo", "./fifo"], "has no readable images"),
    ({"GAND_DATABASE_URL": "sqlite:///{root}/db.fifo"}, ["list"], "is not a regular file"),
    ({"GAND_HOME": "{root}/home.fifo"}, ["list"], "is not a folder"),
]


@pytest.mark.parametrize("env,args,message", HANGS, ids=[" ".join(a)[:40] for _, a, _ in HANGS])
def test_nothing_hangs_on_a_fifo(home, env, args, message):
    for name in ("db.fifo", "home.fifo"):
        if not (home.home / name).exists():
            os.mkfifo(home.home / name)
    env = {k: v.replace("{root}", str(home.home)) for k, v in env.items()}
    before = home.store().count_rows()
    p = run_gand(home, *args, env=env, timeout=90)
    assert_refused(p.returncode, p.stdout, p.stderr, message)
    assert home.store().count_rows() == before and not _queued(home)


DB_CASES = [
    (S + ["--steps", "99999999999999999999"], "--steps 99999999999999999999 is invalid"),
    (S + ["--steps", "3000000000"], "--steps 3000000000 is invalid"),
    (S + ["--steps", "2147483648"], "--steps 2147483648 is invalid"),
    (S + ["--set", "lr=inf"], "--set lr=inf: expected a finite number"),
    (S + ["--set", "lr=NaN"], "--set lr=NaN: expected a finite number"),
    (S + ["--lr", "-inf"], "--lr -inf is invalid"),
    (S + ["--seed", str(2**63)], "is invalid; expected 0 ≤ seed < 2^63"),
    (S + ["--name", "a\x00b"], "--name 'a\\x00b' is invalid"),
    (["resume", "{trained}", "--steps", "3000000000"], "--steps 3000000000 is invalid"),
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_home(request, tmp_path_factory):
    if request.param == "postgres" and not pg_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    root = tmp_path_factory.mktemp(f"db-{request.param}")
    g = Gand(root, make_env(root, "filesystem", request.param))
    from gand import plugins

    g.trained = job_with_checkpoint(g.store(), plugins.load(), root)
    yield g
    g.stop_workers()
    drop_schema(root)


@pytest.mark.parametrize("args,message", DB_CASES, ids=[" ".join(a)[:50] for a, _ in DB_CASES])
def test_values_the_database_cannot_hold_are_refused_at_submit(db_home, args, message):
    before = db_home.store().count_rows()
    code, out, err = cli(db_home, *_args(args, db_home))
    assert_refused(code, out, err, message)
    assert db_home.store().count_rows() == before and not _queued(db_home)


def test_the_store_refuses_what_no_backend_could_hold(db_home):
    """The store's own guard, under the CLI's: the same refusal on SQLite and PostgreSQL."""
    s = db_home.store()
    before = s.count_rows()
    for kwargs, message in (({"total_steps": 2**31}, "total_steps"),
                            ({"config": {"lr": float("inf")}}, "config.lr"),
                            ({"config": {"n": 2**70}}, "config.n"),
                            ({"name": "a\x00b"}, "name")):
        args = {**dict(variant="gan", loss="bce", data=["ring8"], config={}, total_steps=5),
                **kwargs}
        with pytest.raises(UsageError, match=message):
            s.create_job(**args)
    assert s.count_rows() == before


# --- the guard that fails any test whose CLI call printed a traceback --------------------------

def test_the_traceback_guard_and_gand_debug(home):
    with pytest.raises(AssertionError, match="Traceback"):
        no_traceback(("list",), {}, "", "Traceback (most recent call last):\n  boom\n")
    with pytest.raises(AssertionError, match="internal error"):
        no_traceback(("list",), {}, "", "gand: internal error: KeyError: 'x'\n")
    no_traceback(("list",), {"GAND_DEBUG": "1"}, "", "Traceback (most recent call last):\n")
    # GAND_DEBUG=1 shows developers the whole traceback of an error that is otherwise one line.
    p = run_gand(home, "list", env={"GAND_DEBUG": "1", "GAND_LEASE_SECONDS": "abc"})
    assert p.returncode != 0 and "Traceback (most recent call last)" in p.stderr
    assert "GAND_LEASE_SECONDS='abc' is invalid" in p.stderr
