"""The checkpoint file gand writes (gand/engine/torchfile.py) is the file torch.save writes.

gand lays the file out itself so that a background write leaves the interpreter lock to the
training thread; these tests hold it to torch.save's own output record by record (names, sizes,
CRC-32s), to zip's own integrity check, and to torch.load, for odd states and for the real
states of several variants.
"""
from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from gand.engine import checkpoint as ckpt
from gand.engine import torchfile
from gand.engine.trainer import Run
from gand.jobspec import build_config

# Differs between any two saves: torch writes a random id there.
RANDOM_RECORD = "archive/.data/serialization_id"


def records(blob: bytes) -> dict[str, tuple[int, int]]:
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        assert z.testzip() is None  # every record's CRC-32 matches its bytes
        return {i.filename: (i.file_size, i.CRC) for i in z.infolist()
                if i.filename != RANDOM_RECORD}


def torch_file(state) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def gand_file(tmp_path: Path, state) -> bytes:
    path = tmp_path / "step.pt"
    nbytes, digest = ckpt.save(path, state)
    blob = path.read_bytes()
    assert (nbytes, digest) == (len(blob), hashlib.sha256(blob).hexdigest())
    return blob


def same(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.stride()) == (b.dtype, b.shape, b.stride())
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        assert getattr(a, "_metadata", None) == getattr(b, "_metadata", None)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    else:
        assert a == b


def odd_state() -> dict:
    base = torch.randn(4, 6)
    sd = torch.nn.BatchNorm2d(3).state_dict()  # an OrderedDict with _metadata, an int64 counter
    return {
        "base": base,
        "row": base[2],  # a view: shares base's storage, at an offset
        "again": base,  # the same tensor twice: stored once
        "empty": torch.empty(0),  # a storage with no bytes: numbered, but no gap in the file
        "after_empty": torch.arange(7),
        "half": torch.randn(5).half(),
        "bf16": torch.randn(3, 3).bfloat16(),
        "channels_last": torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
        "transposed": torch.randn(3, 5).t(),
        "scalar": torch.tensor(2.5),
        "bool": torch.tensor([True, False]),
        "nested": [(torch.ones(2), "x", None), {"deep": [torch.zeros(1, 1)]}],
        "sd": sd,
        "od": OrderedDict(b=torch.ones(3), a=1),
        "plain": {"step": 7, "name": "ring8", "lr": 1e-3},
    }


def test_the_file_is_torch_saves_record_for_record(tmp_path):
    state = odd_state()
    blob = gand_file(tmp_path, state)
    assert records(blob) == records(torch_file(state))
    back = torch.load(io.BytesIO(blob), weights_only=True)
    same(back, state)
    # Views stay views of one storage, as torch.save keeps them.
    assert back["row"].untyped_storage().data_ptr() == back["base"].untyped_storage().data_ptr()
    assert back["again"] is back["base"]


def test_the_tensor_bytes_are_written_from_the_tensors_themselves():
    """What lets a write leave the interpreter lock to the training thread: torch.save no longer
    copies the tensors' bytes (under the lock); each one reaches hashlib and the file as a view
    of its own storage, and only the skeleton (headers, pickled structure) is gand's bytes."""
    import ctypes

    state = {"a": torch.randn(256, 256), "b": [torch.randn(1000)], "c": torch.randn(3)}
    parts = torchfile.pieces(state)
    at = {ctypes.addressof(ctypes.c_char.from_buffer(p)): len(p)
          for p in parts if isinstance(p, memoryview)}
    for t in (state["a"], state["b"][0], state["c"]):
        assert at.get(t.data_ptr()) == t.untyped_storage().nbytes()
    tensor_bytes = sum(t.untyped_storage().nbytes() for t in (state["a"], state["b"][0],
                                                            state["c"]))
    assert sum(len(p) for p in parts) - tensor_bytes < 4096  # the skeleton


@pytest.mark.parametrize("variant,data,extra", [
    ("gan", "ring8", []),
    ("dcgan", "mnist:tests/data/mnist", ["ema=0.999"]),
    ("cyclegan", None, []),
])
def test_a_training_state_round_trips(registry, tmp_path, variant, data, extra):
    if variant == "cyclegan":  # two tiny image folders, so that it has pools to carry
        from PIL import Image

        folders = []
        for name, color in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
            folder = tmp_path / name
            folder.mkdir()
            for i in range(4):
                Image.new("RGB", (32, 32), tuple(c + 5 * i for c in color)).save(folder / f"{i}.png")
            folders.append(str(folder))
        data, extra = ",".join(folders), ["image_size=32", "pool_size=4"]
    cfg = build_config(registry, variant=variant, data=data, steps=3, seed=0, device="cpu",
                       checkpoint_every=0, sample_every=0, batch_size=2, sets=extra)
    run = Run.build(cfg, registry)
    for step in range(1, 4):  # optimizer moments and pools exist only after steps
        run.variant.train_step(run.models, run.loss, run.context(step))
    state = ckpt.to_host(run.state(3))
    blob = gand_file(tmp_path, state)
    assert records(blob) == records(torch_file(state))
    same(torch.load(io.BytesIO(blob), weights_only=True), state)


def test_an_unexpected_layout_falls_back_to_torch_save(tmp_path, caplog, monkeypatch):
    """Where the skeleton torch wrote does not match what gand expects (a torch that numbers
    storages otherwise: here one storage goes missing from gand's count), the file is still
    written, by torch.save in memory, and the log says so."""
    count = torchfile._storages_in_save_order
    monkeypatch.setattr(torchfile, "_storages_in_save_order", lambda state: count(state)[:-1])
    state = odd_state()
    with caplog.at_level(logging.DEBUG, logger="gand.engine"):  # a warning once, then debug
        blob = gand_file(tmp_path, state)
    assert "written by torch.save in memory" in caplog.text
    assert records(blob) == records(torch_file(state))
    same(torch.load(io.BytesIO(blob), weights_only=True), state)
