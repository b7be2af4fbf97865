"""gand's built-in dataset types: gauss1d, ring8, grid25, mnist and folder.

Addressed in `--data` as `NAME` or `NAME:ARG`; a plain path goes to `folder` (the core's spec
resolution does that routing). `describe` checks a spec and reports its DataInfo without loading
pixel data; `load` reads the data at the shape the variant asks for and hands back a source that
keeps everything in device memory.

Nothing here touches the network, except `mnist` when GAND_ALLOW_DOWNLOAD=1 is set and the
folder holds no IDX files.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from gand.api import DataInfo, DatasetType, DataSource, FunctionSource, TensorSource
from gand.errors import UsageError
from gand.hookspecs import hookimpl

# ---------------------------------------------------------------------------------------------
# Shared helpers


def _spec(name: str, arg: Optional[str]) -> str:
    return name if arg is None else f"{name}:{arg}"


def _no_arg(name: str, arg: Optional[str]) -> None:
    if arg is not None:
        raise UsageError(f"dataset {name} takes no argument; got {name}:{arg} (use --data {name})")


def _check_vector_shape(info: DataInfo, shape) -> None:
    if tuple(shape) != tuple(info.shape):
        raise UsageError(f"dataset {info.spec} has shape {tuple(info.shape)}; "
                         f"cannot load it at shape {tuple(shape)}")


def _check_image_shape(spec: str, shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or shape[1] < 1 or shape[2] < 1:
        raise UsageError(f"dataset {spec}: cannot load images at shape {shape}; "
                         f"expected (channels, height, width) with 1 or 3 channels")
    return shape  # type: ignore[return-value]


def _u8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1]."""
    return x.to(torch.float32).div_(127.5).sub_(1.0)


# ---------------------------------------------------------------------------------------------
# Synthetic distributions


class Gauss1d(DatasetType):
    name = "gauss1d"
    help = "the 1-D standard normal N(0, 1); endless, unlabelled"
    needs_arg = False

    def describe(self, arg: Optional[str]) -> DataInfo:
        _no_arg(self.name, arg)
        return DataInfo(spec=self.name, kind="vector", shape=(1,), num_classes=None, size=None)

    def load(self, arg, info, shape, device) -> DataSource:
        _check_vector_shape(info, shape)

        def draw(n: int, dev: torch.device):
            return torch.randn(n, 1, device=dev), None

        return FunctionSource(info, draw, device)


class _Mixture(DatasetType):
    """An equal-weight mixture of isotropic 2-D Gaussians around fixed modes."""

    modes: list[list[float]]
    std: float

    def describe(self, arg: Optional[str]) -> DataInfo:
        _no_arg(self.name, arg)
        return DataInfo(spec=self.name, kind="vector", shape=(2,), num_classes=None, size=None,
                        extra={"modes": [list(m) for m in self.modes], "std": self.std})

    def load(self, arg, info, shape, device) -> DataSource:
        _check_vector_shape(info, shape)
        centres = torch.tensor(self.modes, dtype=torch.float32)
        std = self.std
        on_device: dict[torch.device, torch.Tensor] = {}

        def draw(n: int, dev: torch.device):
            means = on_device.get(dev)
            if means is None:
                means = on_device[dev] = centres.to(dev)
            idx = torch.randint(0, means.shape[0], (n,), device=dev)
            return means[idx] + std * torch.randn(n, 2, device=dev), None

        return FunctionSource(info, draw, device)


def _ring_modes(k: int, radius: float = 1.0) -> list[list[float]]:
    return [[radius * math.cos(2 * math.pi * i / k), radius * math.sin(2 * math.pi * i / k)]
            for i in range(k)]


class Ring8(_Mixture):
    name = "ring8"
    help = "8 Gaussians (std 0.01) on the unit circle; the classic mode-collapse check"
    needs_arg = False
    modes = _ring_modes(8)
    std = 0.01


class Grid25(_Mixture):
    name = "grid25"
    help = "25 Gaussians (std 0.05) on the grid {-4,-2,0,2,4}^2"
    needs_arg = False
    modes = [[float(x), float(y)] for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)]
    std = 0.05


# ---------------------------------------------------------------------------------------------
# MNIST from IDX files

_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049
_SPLITS = ("train", "t10k")  # concatenated in this order when both are present


def _idx_candidates(split: str, what: str) -> list[str]:
    kind = "idx3" if what == "images" else "idx1"
    names = []
    for sep in ("-", "."):  # the canonical name, and the t10k-images.idx3-ubyte variant
        base = f"{split}-{what}{sep}{kind}-ubyte"
        names += [base, base + ".gz"]
    return names


def _open_idx(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _read_idx_header(path: Path, magic: int, ndims: int) -> tuple[int, ...]:
    """The dims of an IDX file after checking its magic number; UsageError when malformed."""
    size = 4 * (1 + ndims)
    try:
        with _open_idx(path) as f:
            head = f.read(size)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UsageError(f"dataset mnist: cannot read '{path}': {e}") from None
    if len(head) < size:
        raise UsageError(f"dataset mnist: '{path}' is too short to be an IDX file")
    got, *dims = struct.unpack(f">{1 + ndims}i", head)
    if got != magic:
        what = "images" if magic == _IMAGES_MAGIC else "labels"
        raise UsageError(f"dataset mnist: '{path}' is not an IDX {what} file "
                         f"(magic {got}, expected {magic})")
    if any(d < 0 for d in dims):
        raise UsageError(f"dataset mnist: '{path}' has a bad IDX header {tuple(dims)}")
    if not path.name.endswith(".gz"):
        expected = size + math.prod(dims)
        actual = path.stat().st_size
        if actual < expected:
            raise UsageError(f"dataset mnist: '{path}' is truncated ({actual} bytes, "
                             f"header says {expected})")
    return tuple(dims)


def _read_idx_body(path: Path, header_size: int, count: int) -> np.ndarray:
    try:
        with _open_idx(path) as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UsageError(f"dataset mnist: cannot read '{path}': {e}") from None
    body = np.frombuffer(data, dtype=np.uint8, offset=min(header_size, len(data)))
    if body.size < count:
        raise UsageError(f"dataset mnist: '{path}' is truncated ({body.size} of {count} "
                         f"data bytes)")
    return body[:count]


class Mnist(DatasetType):
    name = "mnist"
    help = ("MNIST digits from a folder of IDX files (gzipped or not; train and/or t10k split, "
            "or torchvision's DIR/MNIST/raw): mnist:DIR. Set GAND_ALLOW_DOWNLOAD=1 to download "
            "into an empty DIR")
    needs_arg = True

    # -- locating the files

    @staticmethod
    def _search_dirs(root: Path) -> list[Path]:
        return [root, root / "MNIST" / "raw", root / "raw"]

    def _find_splits(self, root: Path) -> list[tuple[str, Path, Optional[Path]]]:
        """(split, images file, labels file or None) for each split with an images file."""
        found = []
        dirs = [d for d in self._search_dirs(root) if d.is_dir()]
        for split in _SPLITS:
            images = labels = None
            for d in dirs:
                images = next((d / n for n in _idx_candidates(split, "images")
                               if (d / n).is_file()), None)
                if images is not None:
                    labels = next((d / n for n in _idx_candidates(split, "labels")
                                   if (d / n).is_file()), None)
                    break
            if images is not None:
                found.append((split, images, labels))
        return found

    @staticmethod
    def _download_allowed() -> bool:
        return os.environ.get("GAND_ALLOW_DOWNLOAD", "").strip() == "1"

    def _download(self, root: Path, arg: str) -> None:
        try:
            from torchvision.datasets import MNIST
            MNIST(str(root), train=True, download=True)
        except Exception as e:  # network, disk, or a mirror gone: say so on one line
            msg = " ".join(str(e).split()) or type(e).__name__
            raise UsageError(f"dataset mnist: download into '{arg}' failed: {msg}") from None

    def _locate(self, arg: Optional[str]):
        if arg is None or not arg.strip():
            raise UsageError("dataset mnist needs a folder: --data mnist:DIR")
        root = Path(arg).expanduser()
        allowed = self._download_allowed()
        if not root.exists() and not allowed:
            raise UsageError(f"dataset mnist: folder '{arg}' does not exist")
        if root.exists() and not root.is_dir():
            raise UsageError(f"dataset mnist: '{arg}' is not a folder (expected a folder of "
                             f"IDX files)")
        splits = self._find_splits(root) if root.exists() else []
        if not splits and allowed:
            self._download(root, arg)
            splits = self._find_splits(root)
        if not splits:
            raise UsageError(
                f"dataset mnist: no IDX files in '{arg}'; expected t10k-images-idx3-ubyte[.gz] "
                f"and t10k-labels-idx1-ubyte[.gz] and/or train-images-idx3-ubyte[.gz] and "
                f"train-labels-idx1-ubyte[.gz] (or set GAND_ALLOW_DOWNLOAD=1 to download)")
        for split, images, labels in splits:
            if labels is None:
                raise UsageError(f"dataset mnist: '{images}' has no labels file beside it; "
                                 f"expected {split}-labels-idx1-ubyte[.gz]")
        return splits

    def _headers(self, splits):
        """[(images, labels, n, rows, cols)] after checking magics, counts and image sizes."""
        out = []
        size = None
        for _, images, labels in splits:
            n, rows, cols = _read_idx_header(images, _IMAGES_MAGIC, 3)
            (m,) = _read_idx_header(labels, _LABELS_MAGIC, 1)
            if n != m:
                raise UsageError(f"dataset mnist: '{images}' holds {n} images but '{labels}' "
                                 f"holds {m} labels")
            if rows < 1 or cols < 1:
                raise UsageError(f"dataset mnist: '{images}' has empty {rows}x{cols} images")
            if size is not None and size != (rows, cols):
                raise UsageError(f"dataset mnist: '{images}' holds {rows}x{cols} images, the "
                                 f"other split {size[0]}x{size[1]}")
            size = (rows, cols)
            out.append((images, labels, n, rows, cols))
        return out

    # -- the DatasetType interface

    def describe(self, arg: Optional[str]) -> DataInfo:
        headers = self._headers(self._locate(arg))
        n = sum(h[2] for h in headers)
        if n == 0:
            raise UsageError(f"dataset mnist: the IDX files in '{arg}' hold no images")
        rows, cols = headers[0][3], headers[0][4]
        return DataInfo(spec=_spec(self.name, arg), kind="image", shape=(1, rows, cols),
                        num_classes=10, size=n)

    def load(self, arg, info, shape, device) -> DataSource:
        c, h, w = _check_image_shape(info.spec, shape)
        headers = self._headers(self._locate(arg))
        xs, ys = [], []
        for images, labels, n, rows, cols in headers:
            pix = _read_idx_body(images, 16, n * rows * cols).reshape(n, 1, rows, cols)
            lab = _read_idx_body(labels, 8, n)
            if lab.size and int(lab.max()) >= 10:
                raise UsageError(f"dataset mnist: '{labels}' holds label {int(lab.max())}; "
                                 f"expected 0 to 9")
            xs.append(torch.from_numpy(pix.copy()))
            ys.append(torch.from_numpy(lab.astype(np.int64)))
        device = torch.device(device)
        x = torch.cat(xs).to(device)  # uint8 over the bus, converted there
        y = torch.cat(ys).to(device)
        x = _u8_to_unit(x)
        if (h, w) != tuple(x.shape[-2:]):
            x = torch.cat([F.interpolate(part, size=(h, w), mode="bilinear", antialias=True,
                                         align_corners=False)
                           for part in x.split(8192)]).clamp_(-1.0, 1.0)
        if c == 3:
            x = x.expand(-1, 3, -1, -1)  # a view: sampling gathers full 3-channel copies
        if info.size != x.shape[0]:
            info = replace(info, size=int(x.shape[0]))
        return TensorSource(info, x, y, device)


# ---------------------------------------------------------------------------------------------
# A folder of images, optionally one subfolder per class

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GREY_MODES = {"L", "1", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_VERIFY_ALL = 5000    # up to this many files, describe opens and verifies every one
_PROBE_ALL = 20000    # up to this many, it reads every header; beyond, a sample of them
_PROBE_SAMPLE = 2000


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    if not recursive:
        try:
            return sorted(p for p in folder.iterdir() if _is_image_name(p.name) and p.is_file())
        except OSError:
            return []
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if _is_image_name(f)]
    return out


def _probe(path: Path, verify: bool) -> Optional[tuple[tuple[int, int], str]]:
    """((height, width), mode) from the file's header, or None when PIL cannot read it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            mode = im.mode
            if im.format in ("JPEG", "MPO", "WEBP"):  # EXIF from the header, no decoding
                try:
                    if im.getexif().get(0x0112) in (5, 6, 7, 8):  # turned by 90 degrees
                        w, h = h, w
                except Exception:
                    pass
            if verify:
                im.verify()
    except Exception:
        return None
    if w < 1 or h < 1:
        return None
    return (h, w), mode


def _to_mode(im, mode: str):
    """PIL image -> "L" or "RGB", scaling 16-bit and float greys instead of clipping them."""
    from PIL import Image

    if im.mode == mode:
        return im
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        a = np.asarray(im, dtype=np.float64)
        top = a.max() if a.size else 0.0
        if top > 255:
            a = a * (255.0 / (65535.0 if top <= 65535 else top))
        elif im.mode == "F" and top <= 1.0:
            a = a * 255.0
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
        return im if mode == "L" else im.convert(mode)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # via RGBA, as PIL asks for palette images with transparency
    return im.convert(mode)


def _read_image(path: Path, c: int, h: int, w: int) -> Optional[np.ndarray]:
    """One image as uint8 (c, h, w): short side scaled to cover the target, centre-cropped."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.load()
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:
                pass
            im = _to_mode(im, "L" if c == 1 else "RGB")
            iw, ih = im.size
            if iw < 1 or ih < 1:
                return None
            scale = max(h / ih, w / iw)
            nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
            if (nw, nh) != (iw, ih):
                im = im.resize((nw, nh), Image.Resampling.BICUBIC)
            left, top = (nw - w) // 2, (nh - h) // 2
            im = im.crop((left, top, left + w, top + h))
            a = np.asarray(im, dtype=np.uint8)
    except Exception:
        return None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


class Folder(DatasetType):
    name = "folder"
    help = ("a folder of images (png, jpg, jpeg, bmp, gif, webp): folder:PATH or just PATH. "
            "With subfolders of images, each subfolder is a class (loose images beside them "
            "are then ignored); images are scaled and centre-cropped to the model's size")
    needs_arg = True

    def _root(self, arg: Optional[str]) -> Path:
        if arg is None or not arg.strip():
            raise UsageError("dataset folder needs a path: --data folder:PATH")
        root = Path(arg).expanduser()
        if not root.exists():
            raise UsageError(f"dataset folder: '{arg}' does not exist")
        if not root.is_dir():
            raise UsageError(f"dataset folder: '{arg}' is not a folder")
        return root

    @staticmethod
    def _subfolders(root: Path) -> list[Path]:
        try:
            return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                          key=lambda p: p.name)
        except OSError:
            return []

    def _none_readable(self, arg: str) -> UsageError:
        exts = ", ".join(IMAGE_EXTENSIONS)
        return UsageError(f"dataset folder '{arg}' has no readable images (looked for {exts}, "
                          f"in the folder and in its subfolders)")

    def describe(self, arg: Optional[str]) -> DataInfo:
        root = self._root(arg)
        groups = [(d.name, _images_in(d, recursive=True)) for d in self._subfolders(root)]
        groups = [(name, files) for name, files in groups if files]
        total = sum(len(files) for _, files in groups)
        verify = total <= _VERIFY_ALL
        classes: list[str] = []
        probes: list[tuple[tuple[int, int], str]] = []
        size = 0
        if total <= _PROBE_ALL:
            for name, files in groups:
                found = [p for p in (_probe(f, verify) for f in files) if p is not None]
                if found:
                    classes.append(name)
                    probes += found
                    size += len(found)
        else:  # a big folder: a class needs one readable file; sizes and modes from a sample
            for name, files in groups:
                if any(_probe(f, False) is not None for f in files[:50]):
                    classes.append(name)
                    size += len(files)
            kept = [f for name, files in groups if name in classes for f in files]
            step = max(1, len(kept) // _PROBE_SAMPLE)
            probes = [p for p in (_probe(f, False) for f in kept[::step]) if p is not None]
        if not classes:
            files = _images_in(root, recursive=False)
            if len(files) <= _PROBE_ALL:
                probes = [p for p in (_probe(f, len(files) <= _VERIFY_ALL) for f in files)
                          if p is not None]
                size = len(probes)
            else:
                step = max(1, len(files) // _PROBE_SAMPLE)
                probes = [p for p in (_probe(f, False) for f in files[::step]) if p is not None]
                size = len(files) if probes else 0
        if not probes or size == 0:
            raise self._none_readable(arg)
        channels = 1 if all(mode in _GREY_MODES for _, mode in probes) else 3
        counts = Counter(hw for hw, _ in probes)
        (h, w), _ = max(counts.items(), key=lambda kv: (kv[1], kv[0][0] * kv[0][1], kv[0]))
        extra = {"classes": classes} if classes else {}
        return DataInfo(spec=_spec(self.name, arg), kind="image", shape=(channels, h, w),
                        num_classes=len(classes) or None, size=size, extra=extra)

    def load(self, arg, info, shape, device) -> DataSource:
        c, h, w = _check_image_shape(info.spec, shape)
        root = self._root(arg)
        classes = list(info.extra.get("classes") or [])
        if classes:
            missing = [n for n in classes if not (root / n).is_dir()]
            if missing:
                raise UsageError(f"dataset folder '{arg}': class folder '{missing[0]}' is gone "
                                 f"since the job was submitted")
            files, labels = [], []
            for i, name in enumerate(classes):
                found = _images_in(root / name, recursive=True)
                files += found
                labels += [i] * len(found)
        else:
            files = _images_in(root, recursive=False)
            labels = []
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:  # PIL decodes and resizes without the GIL
            arrays = list(pool.map(lambda f: _read_image(f, c, h, w), files, chunksize=32))
        keep = [i for i, a in enumerate(arrays) if a is not None]
        if not keep:
            raise self._none_readable(arg)
        pixels = np.empty((len(keep), c, h, w), dtype=np.uint8)
        for j, i in enumerate(keep):
            pixels[j] = arrays[i]
            arrays[i] = None
        device = torch.device(device)
        x = _u8_to_unit(torch.from_numpy(pixels).to(device))
        y = torch.tensor([labels[i] for i in keep], dtype=torch.long) if classes else None
        if info.size != len(keep):
            info = replace(info, size=len(keep))
        return TensorSource(info, x, y, device)


# ---------------------------------------------------------------------------------------------


@hookimpl
def gand_register_datasets():
    return [Gauss1d, Ring8, Grid25, Mnist, Folder]
