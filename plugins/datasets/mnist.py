"""`mnist:DIR`: MNIST from local IDX files, gzipped or not (download only when allowed)."""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from gand.api import DataInfo, DatasetType, DataSource, TensorSource
from gand.engine.images import pixel_limit
from gand.errors import UsageError
from gand_plugins.datasets.common import _check_image_shape, _spec, _u8_to_unit

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
    expected = size + math.prod(dims)
    if not path.name.endswith(".gz"):
        actual = path.stat().st_size
        if actual < expected:
            raise UsageError(f"dataset mnist: '{path}' is truncated ({actual} bytes, "
                             f"header says {expected})")
    else:
        _check_gz_length(path, expected)
    return tuple(dims)


def _check_gz_length(path: Path, expected: int) -> None:
    """Decompresses a .gz IDX file as far as its header says it reaches (without keeping it):
    a truncated or corrupt archive is refused at submit, not found by the worker."""
    got = 0
    try:
        with gzip.open(path, "rb") as f:
            while got < expected:
                chunk = f.read(min(1 << 20, expected - got))
                if not chunk:
                    break
                got += len(chunk)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise UsageError(f"dataset mnist: '{path}' is damaged after {got} of {expected} bytes: "
                         f"{' '.join(str(e).split()) or type(e).__name__}") from None
    if got < expected:
        raise UsageError(f"dataset mnist: '{path}' is truncated ({got} bytes uncompressed, "
                         f"header says {expected})")


def _read_idx_body(path: Path, header_size: int, count: int) -> np.ndarray:
    try:
        with _open_idx(path) as f:
            data = f.read(header_size + count)  # not more: trailing bytes are never used
    except (OSError, EOFError, zlib.error) as e:
        raise UsageError(f"dataset mnist: cannot read '{path}': {e}") from None
    body = np.frombuffer(data, dtype=np.uint8, offset=min(header_size, len(data)))
    if body.size < count:
        raise UsageError(f"dataset mnist: '{path}' is truncated ({body.size} of {count} "
                         f"data bytes)")
    return body[:count]


def _check_labels(path: Path, labels: np.ndarray) -> None:
    if labels.size and int(labels.max()) >= 10:
        raise UsageError(f"dataset mnist: '{path}' holds label {int(labels.max())}; "
                         f"expected 0 to 9")


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
            if rows * cols > pixel_limit():
                raise UsageError(f"dataset mnist: '{images}' claims {rows}x{cols} images, over "
                                 f"gand's limit of {pixel_limit()} pixels (GAND_MAX_IMAGE_PIXELS)")
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
        for _, labels, count, _, _ in headers:
            _check_labels(labels, _read_idx_body(labels, 8, count))  # small: read them all
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
            _check_labels(labels, lab)
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
