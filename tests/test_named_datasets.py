"""Named datasets: `gand data add|list|remove`, and `--data NAME` at submit.

Most commands run in-process through `gand.cli.main.main` (the real CLI code and a real SQLite
store under a throw-away GAND_HOME); one test runs a job through a real worker to show that a
job keeps the spec its name resolved to when the name is later re-pointed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import MNIST
from PIL import Image

from gand import plugins
from gand.errors import UsageError
from gand.jobspec import build_config, resolve_data


def write_images(folder: Path, n: int, size: int, mode: str) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new(mode, (size, size), (i * 30) if mode == "L" else (i * 30, 0, 90)).save(
            folder / f"{i}.png")
    return folder


@pytest.fixture
def cli(gand_inprocess):
    return gand_inprocess


@pytest.fixture
def here(gand_inprocess) -> Path:
    """The working directory of the in-process commands, where relative paths start."""
    return gand_inprocess.home


def test_add_list_remove(cli, here):
    write_images(here / "faces", 4, 8, "RGB")
    row = cli.json("data", "add", "faces", "./faces")
    # Stored with an absolute path, so the name means the same from any directory.
    assert row == {"name": "faces", "spec": f"folder:{here / 'faces'}", "kind": "image",
                   "shape": [3, 8, 8], "num_classes": None, "size": 4, "error": None}
    assert cli.ok("data", "add", "ring", "ring8").startswith("ring = ring8  (vector 2)")
    write_images(here / "digits" / "one", 2, 8, "L")
    write_images(here / "digits" / "two", 2, 8, "L")
    assert cli.json("data", "add", "digits", "folder:digits")["num_classes"] == 2

    listed = cli.json("data", "list", "--check")
    assert [r["name"] for r in listed] == ["digits", "faces", "ring"]
    assert listed[1] == row and listed[2]["spec"] == "ring8" and listed[2]["shape"] == [2]
    plain = cli.json("data", "list")  # without --check: the stored specs only, no plugins
    assert [(r["name"], r["spec"]) for r in plain] == [(r["name"], r["spec"]) for r in listed]
    text = cli.ok("data", "list", "--check")
    assert f"faces   folder:{here / 'faces'}  (image 3x8x8, 4 examples)" in text
    assert "(image 1x8x8, 4 examples, 2 classes)" in text

    assert cli.ok("data", "remove", "faces") == f"removed faces (was folder:{here / 'faces'})\n"
    assert [r["name"] for r in cli.json("data", "list")] == ["digits", "ring"]


def test_add_makes_the_argument_path_absolute(cli, here):
    relative = os.path.relpath(MNIST, here)
    row = cli.json("data", "add", "digits", f"mnist:{relative}")
    assert row["spec"] == f"mnist:{MNIST}" and row["num_classes"] == 10
    assert row["kind"] == "image" and row["shape"] == [1, 28, 28]


def test_add_copies_the_spec_of_another_name(cli, here):
    write_images(here / "faces", 2, 8, "RGB")
    cli.ok("data", "add", "faces", str(here / "faces"))
    assert cli.json("data", "add", "alias", "faces")["spec"] == f"folder:{here / 'faces'}"


@pytest.mark.parametrize("name,spec,message", [
    ("faces", "./missing", "dataset folder: './missing' does not exist"),
    ("faces", "./empty", "dataset folder './empty' has no readable images"),
    ("faces", "mnist", "dataset mnist needs an argument"),
    ("faces", "nosuch", "unknown dataset 'nosuch'; dataset types: folder, gauss1d"),
    ("../x", "ring8", "dataset name '../x' is invalid; expected a letter"),
    ("a/b", "ring8", "dataset name 'a/b' is invalid"),
    ("1st", "ring8", "dataset name '1st' is invalid"),
    ("x" * 65, "ring8", f"dataset name '{'x' * 65}' is invalid"),
    ("ring8", "gauss1d", "dataset name 'ring8' is a dataset type"),
    ("mnist", "ring8", "dataset name 'mnist' is a dataset type"),
])
def test_add_refuses_and_writes_nothing(cli, here, name, spec, message):
    (here / "empty").mkdir()
    (here / "empty" / "notes.txt").write_text("not an image")
    (here / "empty" / "broken.png").write_bytes(b"not a png")
    rc, out, err = cli("data", "add", name, spec)
    assert rc == 2 and out == ""
    assert err.startswith(f"gand: error: {message}") and err.count("\n") == 1, err
    assert cli.rows()["datasets"] == 0


def test_add_refuses_a_taken_name(cli):
    cli.ok("data", "add", "ring", "ring8")
    rc, _, err = cli("data", "add", "ring", "grid25")
    assert rc == 2 and "dataset name 'ring' is taken" in err
    assert cli.json("data", "list")[0]["spec"] == "ring8"


def test_list_shows_data_that_has_gone(cli, here):
    write_images(here / "faces", 2, 8, "RGB")
    cli.ok("data", "add", "faces", "./faces")
    shutil.rmtree(here / "faces")
    row = cli.json("data", "list", "--check")[0]
    assert row["kind"] is None and "does not exist" in row["error"]
    assert "UNAVAILABLE: dataset folder:" in cli.ok("data", "list", "--check")


def test_remove_of_an_unknown_name_lists_the_known_ones(cli):
    rc, _, err = cli("data", "remove", "faces")
    assert rc == 1 and err == "gand: error: no dataset named 'faces'; named datasets: (none)\n"
    cli.ok("data", "add", "ring", "ring8")
    cli.ok("data", "add", "grid", "grid25")
    rc, _, err = cli("data", "remove", "faces")
    assert rc == 1
    assert err == "gand: error: no dataset named 'faces'; named datasets: grid or ring\n"


def test_submit_refuses_an_unknown_name_listing_types_and_names(cli):
    cli.ok("data", "add", "ring", "ring8")
    rc, _, err = cli("submit", "gan", "--data", "rnig", "--steps", "5")
    assert rc == 2
    assert err == ("gand: error: unknown dataset 'rnig'; dataset types: folder, gauss1d, grid25, "
                   "mnist, ring8 or stacked-mnist; registered names: ring (`gand data list`); or a folder path\n")
    assert cli.rows()["jobs"] == 0


def test_names_resolve_one_by_one_in_a_comma_separated_list(tmp_path):
    reg = plugins.registry()
    faces = write_images(tmp_path / "faces", 2, 8, "RGB")
    anime = write_images(tmp_path / "anime", 2, 16, "L")
    named = {"faces": f"folder:{faces}", "anime": f"folder:{anime}"}
    got = [resolve_data(reg, s, lambda: named) for s in "faces,anime".split(",")]
    assert [(r.name, r.spec, r.info.shape) for r in got] == [
        ("faces", f"folder:{faces}", (3, 8, 8)), ("anime", f"folder:{anime}", (1, 16, 16))]
    # Types win over names, paths are paths; names are looked up only when needed.
    assert resolve_data(reg, "ring8", lambda: pytest.fail("names were asked for")).name is None
    config = build_config(reg, variant="gan", data="faces", steps=5, named=lambda: named)
    assert config.data[0].spec == f"folder:{faces}" and config.data[0].name == "faces"
    with pytest.raises(UsageError, match="registered names: anime or faces"):
        resolve_data(reg, "face", lambda: named)


def test_two_domain_submit_takes_two_names(cli, here):
    faces = write_images(here / "faces", 2, 32, "RGB")
    anime = write_images(here / "anime", 2, 32, "L")
    cli.ok("data", "add", "faces", "./faces")
    cli.ok("data", "add", "anime", "./anime")
    job_id = cli.json("submit", "cyclegan", "--data", "faces,anime", "--steps", "1")["id"]
    job = cli.json("show", job_id)
    assert job["data"] == [f"folder:{faces}", f"folder:{anime}"]
    assert [d["name"] for d in job["config"]["data"]] == ["faces", "anime"]


def test_a_job_keeps_the_spec_its_name_resolved_to(cli, here):
    colour = write_images(here / "colour", 6, 8, "RGB")
    cli.ok("data", "add", "faces", "./colour")
    job_id = cli.json("submit", "gan", "--data", "faces", "--steps", "3", "--batch-size", "4",
                      "--set", "hidden=16", "--set", "layers=1", "--seed", "1")["id"]
    # Re-point the name before the job runs, at data the job could not train on (vectors for an
    # image model): the job must still train on what the name meant when it was submitted.
    cli.ok("data", "remove", "faces")
    cli.ok("data", "add", "faces", "ring8")
    job = cli.json("show", job_id)
    assert job["data"] == [f"folder:{colour}"]
    assert job["config"]["data"][0]["name"] == "faces"
    assert job["config"]["data"][0]["arg"] == str(colour)
    assert job["config"]["data"][0]["info"]["shape"] == [3, 8, 8]

    worker = cli.gand.worker()  # a real worker process on the same home, broker and database
    assert worker.wait(timeout=180) == 0, cli.gand.worker_log()
    assert cli.json("show", job_id)["status"] == "succeeded", cli.gand.worker_log()
    out = here / "generated"
    cli.ok("generate", job_id, "--n", "2", "--out", str(out))
    pictures = sorted(out.glob("*.png"))
    assert len(pictures) == 2
    for picture in pictures:  # the shape of the data it was submitted with
        assert np.asarray(Image.open(picture)).shape == (8, 8, 3)
