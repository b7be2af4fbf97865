"""The built-in dataset types (gand_plugins.datasets), each reached through a plugin manager."""
from __future__ import annotations

import gzip
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pluggy
import pytest
import torch
from PIL import Image

import gand.hookspecs
import gand_plugins.datasets
import gand_plugins.datasets.folder
from gand import plugins
from gand.api import DatasetType, FunctionSource, TensorSource
from gand.errors import UsageError

MNIST_DIR = Path(__file__).resolve().parent / "data" / "mnist"
MNIST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def types() -> dict[str, type]:
    pm = pluggy.PluginManager("gand")
    pm.add_hookspecs(gand.hookspecs)
    pm.register(gand_plugins.datasets, name="builtin-datasets")
    registered = [cls for group in pm.hook.gand_register_datasets() for cls in group]
    return {cls.name: cls for cls in registered}


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    monkeypatch.delenv("GAND_ALLOW_DOWNLOAD", raising=False)


def open_data(types, name, arg=None, shape=None):
    ds = types[name]()
    info = ds.describe(arg)
    return info, ds.load(arg, info, shape or info.shape, CPU)


def test_registers_the_six_builtin_types(types):
    assert set(types) == {"gauss1d", "ring8", "grid25", "mnist", "stacked-mnist", "folder"}
    for name, cls in types.items():
        assert issubclass(cls, DatasetType)
        assert cls.help
        assert cls.needs_arg == (name in ("mnist", "stacked-mnist", "folder"))


def test_entry_point_registers_them_too():
    reg = plugins.load(allow=("builtin-datasets",))
    assert {"gauss1d", "ring8", "grid25", "mnist", "stacked-mnist", "folder"} <= set(reg.datasets)
    assert isinstance(reg.dataset_type("ring8"), DatasetType)


# ---------------------------------------------------------------------------------------------
# Synthetic


def test_gauss1d(types):
    info, src = open_data(types, "gauss1d")
    assert (info.kind, info.shape, info.size, info.num_classes) == ("vector", (1,), None, None)
    assert isinstance(src, FunctionSource)
    torch.manual_seed(0)
    b = src.sample(20000)
    assert b.x.shape == (20000, 1) and b.x.dtype == torch.float32 and b.y is None
    assert abs(b.x.mean().item()) < 0.05
    assert abs(b.x.std().item() - 1) < 0.05


def test_sampling_follows_the_global_rng(types):
    _, src = open_data(types, "ring8")
    torch.manual_seed(3)
    a = src.sample(64).x
    torch.manual_seed(3)
    assert torch.equal(a, src.sample(64).x)


@pytest.mark.parametrize("name, modes, std", [("ring8", 8, 0.01), ("grid25", 25, 0.05)])
def test_mixtures_sample_near_their_modes(types, name, modes, std):
    info, src = open_data(types, name)
    assert (info.kind, info.shape, info.num_classes, info.size) == ("vector", (2,), None, None)
    assert info.extra["std"] == std
    centres = torch.tensor(info.extra["modes"])
    assert centres.shape == (modes, 2)
    if name == "ring8":
        assert torch.allclose(centres.norm(dim=1), torch.ones(8))
        angles = torch.atan2(centres[:, 1], centres[:, 0]) % (2 * math.pi)
        expected = torch.arange(8) * 2 * math.pi / 8
        assert torch.allclose(angles.sort().values, expected, atol=1e-6)
    else:
        assert sorted(set(centres.flatten().tolist())) == [-4, -2, 0, 2, 4]
    torch.manual_seed(0)
    b = src.sample(2000)
    assert b.x.shape == (2000, 2) and b.y is None
    dist = torch.cdist(b.x, centres)
    nearest = dist.min(dim=1)
    assert (nearest.values < 5 * std).all()
    assert set(nearest.indices.tolist()) == set(range(modes))


@pytest.mark.parametrize("name", ["gauss1d", "ring8", "grid25"])
def test_synthetic_take_no_argument(types, name):
    with pytest.raises(UsageError, match=f"{name}:x"):
        types[name]().describe("x")


def test_synthetic_refuse_another_shape(types):
    ds = types["ring8"]()
    with pytest.raises(UsageError, match="shape"):
        ds.load(None, ds.describe(None), (3,), CPU)


# ---------------------------------------------------------------------------------------------
# MNIST

needs_mnist = pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(),
                                 reason=f"no MNIST files at {MNIST_DIR}")


def write_idx(path: Path, magic: int, array: np.ndarray, gz: bool = False) -> None:
    data = struct.pack(f">{1 + array.ndim}i", magic, *array.shape) + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{split}-images-idx3-ubyte{ext}", 2051, images, gz)
    write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", 2049, labels, gz)


@needs_mnist
def test_mnist_real_test_split(types):
    info, src = open_data(types, "mnist", str(MNIST_DIR))
    assert (info.kind, info.shape, info.num_classes, info.size) == ("image", (1, 28, 28), 10, 10000)
    assert isinstance(src, TensorSource)
    assert src.x.shape == (10000, 1, 28, 28) and src.x.dtype == torch.float32
    assert src.x.min().item() == -1.0 and src.x.max().item() == 1.0
    assert src.y.dtype == torch.long
    assert torch.bincount(src.y, minlength=10).tolist() == MNIST_COUNTS
    b = src.sample(16)
    assert b.x.shape == (16, 1, 28, 28) and b.y.shape == (16,)


@needs_mnist
def test_mnist_resized_to_three_channels(types):
    _, src = open_data(types, "mnist", str(MNIST_DIR), shape=(3, 32, 32))
    assert src.x.shape == (10000, 3, 32, 32)
    assert src.x.min().item() >= -1.0 and src.x.max().item() <= 1.0
    assert torch.equal(src.x[:, 0], src.x[:, 2])
    assert src.sample(8).x.shape == (8, 3, 32, 32)
    assert torch.bincount(src.y, minlength=10).tolist() == MNIST_COUNTS


@needs_mnist
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_ungzipped_copy(types, tmp_path, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(MNIST_DIR / f"{name}.gz", "rb") as f, open(folder / name, "wb") as out:
            shutil.copyfileobj(f, out)
    info, src = open_data(types, "mnist", str(tmp_path))
    assert info.size == 10000 and info.shape == (1, 28, 28)
    _, ref = open_data(types, "mnist", str(MNIST_DIR))
    assert torch.equal(src.x, ref.x) and torch.equal(src.y, ref.y)


def test_mnist_concatenates_train_then_test(types, tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_split(tmp_path, "train", train, np.array([0, 1, 2, 3, 4]), gz=True)
    write_split(tmp_path, "t10k", test, np.array([9, 8, 7]))
    info, src = open_data(types, "mnist", str(tmp_path))
    assert info.size == 8
    assert src.y.tolist() == [0, 1, 2, 3, 4, 9, 8, 7]
    expected = torch.from_numpy(np.concatenate([train, test])).float() / 127.5 - 1
    assert torch.allclose(src.x[:, 0], expected)


def test_mnist_needs_a_folder(types):
    with pytest.raises(UsageError, match=r"dataset mnist needs a folder: --data mnist:DIR"):
        types["mnist"]().describe(None)


def test_mnist_missing_folder(types, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UsageError, match="does not exist") as e:
        types["mnist"]().describe(str(missing))
    assert f"dataset mnist: folder '{missing}' does not exist" == str(e.value)


def test_mnist_folder_without_idx_files(types, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UsageError) as e:
        types["mnist"]().describe(str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path) in msg and "t10k-images-idx3-ubyte" in msg and "\n" not in msg


def test_mnist_bad_magic(types, tmp_path):
    write_split(tmp_path, "t10k", np.zeros((2, 28, 28)), np.zeros(2))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", 2049, np.zeros((2, 28, 28)))
    with pytest.raises(UsageError, match="magic 2049, expected 2051"):
        types["mnist"]().describe(str(tmp_path))


def test_mnist_count_mismatch(types, tmp_path):
    write_split(tmp_path, "t10k", np.zeros((4, 28, 28)), np.zeros(3))
    with pytest.raises(UsageError, match="4 images .* 3 labels"):
        types["mnist"]().describe(str(tmp_path))


def test_mnist_truncated_file(types, tmp_path):
    write_split(tmp_path, "t10k", np.zeros((4, 28, 28)), np.zeros(4))
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UsageError, match="truncated"):
        types["mnist"]().describe(str(tmp_path))


def test_mnist_missing_labels(types, tmp_path):
    write_split(tmp_path, "t10k", np.zeros((2, 28, 28)), np.zeros(2))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UsageError, match="t10k-labels-idx1-ubyte"):
        types["mnist"]().describe(str(tmp_path))


class FakeMNIST:
    """Stands in for torchvision's downloader: writes a tiny split where it would."""

    calls: list = []

    def __init__(self, root, train=True, download=False):
        FakeMNIST.calls.append((root, train, download))
        write_split(Path(root) / "MNIST" / "raw", "train", np.zeros((6, 28, 28)),
                    np.arange(6), gz=True)


def test_mnist_downloads_only_when_allowed(types, tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    FakeMNIST.calls = []
    with pytest.raises(UsageError):  # not allowed: never touches the network
        types["mnist"]().describe(str(tmp_path))
    assert FakeMNIST.calls == []
    monkeypatch.setenv("GAND_ALLOW_DOWNLOAD", "1")
    info, src = open_data(types, "mnist", str(tmp_path))
    assert FakeMNIST.calls[0] == (str(tmp_path), True, True)
    assert info.size == 6 and src.y.tolist() == list(range(6))
    n = len(FakeMNIST.calls)
    types["mnist"]().describe(str(tmp_path))  # the files are there now: no second download
    assert len(FakeMNIST.calls) == n


# ---------------------------------------------------------------------------------------------
# Folder


def save(path: Path, size, colour, mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, fmt)


def test_folder_mixed_sizes_resized_and_cropped(types, tmp_path):
    save(tmp_path / "a.png", (30, 20), (255, 0, 0))
    save(tmp_path / "b.JPG", (30, 20), (0, 255, 0))
    save(tmp_path / "c.bmp", (64, 64), (0, 0, 255))
    save(tmp_path / "d.webp", (12, 40), (255, 255, 255))
    save(tmp_path / "e.gif", (30, 20), 7, mode="L")
    (tmp_path / "readme.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    info = types["folder"]().describe(str(tmp_path))
    assert (info.kind, info.shape, info.num_classes, info.size) == ("image", (3, 20, 30), None, 5)
    assert info.extra == {}
    src = types["folder"]().load(str(tmp_path), info, (3, 16, 16), CPU)
    assert src.y is None
    assert src.x.shape == (5, 3, 16, 16)
    assert src.x.min().item() >= -1 and src.x.max().item() <= 1
    red = src.x[0]  # files load in name order
    assert torch.allclose(red[0], torch.ones(16, 16)) and torch.allclose(red[1], -torch.ones(16, 16))
    assert src.sample(4).x.shape == (4, 3, 16, 16)


def test_folder_centre_crop(types, tmp_path):
    a = np.zeros((20, 60, 3), dtype=np.uint8)  # black flanks, a white middle
    a[:, 14:46] = 255
    Image.fromarray(a).save(tmp_path / "wide.png")
    info = types["folder"]().describe(str(tmp_path))
    assert info.shape == (3, 20, 60)
    src = types["folder"]().load(str(tmp_path), info, (3, 10, 10), CPU)
    assert src.x.shape == (1, 3, 10, 10)
    # short side to 10 -> 30x10 with white at columns 7..23; the centre 10x10 is all white
    assert (src.x > 0.95).all()


def test_folder_grey_images(types, tmp_path):
    for i in range(3):
        save(tmp_path / f"g{i}.png", (8, 8), 60 * i, mode="L")
    info = types["folder"]().describe(str(tmp_path))
    assert info.shape == (1, 8, 8)
    grey = types["folder"]().load(str(tmp_path), info, (1, 8, 8), CPU)
    assert grey.x.shape == (3, 1, 8, 8)
    assert torch.allclose(grey.x[1], torch.full((1, 8, 8), 60 / 127.5 - 1))
    rgb = types["folder"]().load(str(tmp_path), info, (3, 8, 8), CPU)  # grey -> colour
    assert rgb.x.shape == (3, 3, 8, 8)
    assert torch.equal(rgb.x[:, 0], rgb.x[:, 1]) and torch.equal(rgb.x[:, 1], rgb.x[:, 2])


def test_folder_colour_to_grey(types, tmp_path):
    save(tmp_path / "c.png", (8, 8), (255, 0, 0))
    save(tmp_path / "g.png", (8, 8), 100, mode="L")
    info = types["folder"]().describe(str(tmp_path))
    assert info.shape == (3, 8, 8)  # one colour image makes the folder colour
    src = types["folder"]().load(str(tmp_path), info, (1, 8, 8), CPU)
    assert src.x.shape == (2, 1, 8, 8)
    assert abs(src.x[0].mean().item() - (76 / 127.5 - 1)) < 0.02  # PIL's luma of pure red


def test_folder_class_subfolders_give_labels(types, tmp_path):
    for i in range(3):
        save(tmp_path / "cat" / f"{i}.png", (10, 10), (200, 0, 0))
    for i in range(2):
        save(tmp_path / "ant" / "nested" / f"{i}.jpg", (10, 10), (0, 0, 200))
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "x.txt").write_text("no images in here")
    save(tmp_path / "loose.png", (10, 10), (0, 0, 0))
    info = types["folder"]().describe(str(tmp_path))
    assert info.num_classes == 2 and info.extra["classes"] == ["ant", "cat"]
    assert info.size == 5 and info.shape == (3, 10, 10)
    src = types["folder"]().load(str(tmp_path), info, (3, 10, 10), CPU)
    assert src.y.dtype == torch.long
    assert sorted(src.y.tolist()) == [0, 0, 1, 1, 1]
    blue = src.x[src.y == 0]
    assert (blue[:, 2] > 0.4).all() and (blue[:, 0] < -0.9).all()
    b = src.sample(10)
    assert b.y.shape == (10,)


def test_folder_most_common_size(types, tmp_path):
    for i in range(3):
        save(tmp_path / f"s{i}.png", (24, 12), (0, 0, 0))
    save(tmp_path / "big.png", (100, 100), (0, 0, 0))
    assert types["folder"]().describe(str(tmp_path)).shape == (3, 12, 24)


def test_folder_empty_or_unreadable(types, tmp_path):
    with pytest.raises(UsageError) as e:
        types["folder"]().describe(str(tmp_path))
    assert f"'{tmp_path}' has no readable images" in str(e.value) and ".png" in str(e.value)
    (tmp_path / "fake.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "notes.txt").write_text("text")
    with pytest.raises(UsageError, match="no readable images") as e:
        types["folder"]().describe(str(tmp_path))
    assert str(tmp_path) in str(e.value)


def test_folder_missing_path(types, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UsageError, match="does not exist") as e:
        types["folder"]().describe(str(missing))
    assert str(missing) in str(e.value)


def test_folder_bad_args(types, tmp_path):
    with pytest.raises(UsageError, match="needs a path"):
        types["folder"]().describe(None)
    f = tmp_path / "one.png"
    save(f, (4, 4), (0, 0, 0))
    with pytest.raises(UsageError, match="not a folder"):
        types["folder"]().describe(str(f))
    info = types["folder"]().describe(str(tmp_path))
    with pytest.raises(UsageError, match="shape"):
        types["folder"]().load(str(tmp_path), info, (2, 4, 4), CPU)


def test_folder_skips_files_that_fail_to_decode(types, tmp_path):
    save(tmp_path / "good.png", (16, 16), (10, 20, 30))
    save(tmp_path / "cut.png", (16, 16), (10, 20, 30))
    data = (tmp_path / "cut.png").read_bytes()
    info = types["folder"]().describe(str(tmp_path))
    (tmp_path / "cut.png").write_bytes(data[:40])  # header intact, pixels gone after describe
    src = types["folder"]().load(str(tmp_path), info, (3, 16, 16), CPU)
    assert src.x.shape[0] == 1 and src.info.size == 1


def test_big_folder_is_described_from_a_sample(types, tmp_path, monkeypatch):
    monkeypatch.setattr(gand_plugins.datasets.folder, "_VERIFY_ALL", 2)
    monkeypatch.setattr(gand_plugins.datasets.folder, "_PROBE_ALL", 4)
    monkeypatch.setattr(gand_plugins.datasets.folder, "_PROBE_SAMPLE", 3)
    for i in range(8):
        save(tmp_path / ("a" if i % 2 else "b") / f"{i}.png", (12, 6), 50, mode="L")
    info = types["folder"]().describe(str(tmp_path))
    assert (info.shape, info.size, info.extra["classes"]) == ((1, 6, 12), 8, ["a", "b"])
    src = types["folder"]().load(str(tmp_path), info, (1, 6, 12), CPU)
    assert src.x.shape == (8, 1, 6, 12) and sorted(src.y.tolist()) == [0] * 4 + [1] * 4


def test_folder_sixteen_bit_grey_is_scaled_not_clipped(types, tmp_path):
    a = np.full((8, 8), 32768, dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    info = types["folder"]().describe(str(tmp_path))
    assert info.shape == (1, 8, 8)
    src = types["folder"]().load(str(tmp_path), info, (1, 8, 8), CPU)
    assert abs(src.x.mean().item()) < 0.02  # mid-grey, not white
