"""`folder:PATH` (or a plain path): a folder of images, class subfolders become labels."""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from gand.api import DataInfo, DatasetType, DataSource, TensorSource
from gand.engine.images import ImageTooLarge, is_regular_file, open_image
from gand.errors import UsageError
from gand_plugins.datasets.common import _check_image_shape, _spec, _u8_to_unit

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GREY_MODES = {"L", "1", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_VERIFY_ALL = 5000    # up to this many files, describe opens and verifies every one
_PROBE_ALL = 20000    # up to this many, it reads every header; beyond, a sample of them
_PROBE_SAMPLE = 2000


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    """Regular files with an image name: a FIFO, socket or device named like an image is never
    listed, so nothing ever opens it (reading a FIFO blocks forever)."""
    if not recursive:
        try:
            return sorted(p for p in folder.iterdir()
                          if _is_image_name(p.name) and is_regular_file(p))
        except OSError:
            return []
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames)
                if _is_image_name(f) and is_regular_file(Path(dirpath) / f)]
    return out


def _probe(path: Path, verify: bool) -> Optional[tuple[tuple[int, int], str]]:
    """((height, width), mode) from the file's header, or None when PIL cannot read it.

    An image over gand's pixel limit raises ImageTooLarge: a submit names it rather than
    skipping it silently."""
    try:
        with open_image(path) as im:
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
    except ImageTooLarge:
        raise
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
        with open_image(path) as im:  # over the pixel limit: skipped like an unreadable file
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
        if any(Path(arg).expanduser().glob("*-idx[0-9]-ubyte*")):
            # A bare path means a folder of images; MNIST's IDX files are their own type.
            return UsageError(f"dataset folder '{arg}' has no images but MNIST IDX files; "
                              f"use mnist:{arg}")
        return UsageError(f"dataset folder '{arg}' has no readable images (looked for {exts}, "
                          f"in the folder and in its subfolders)")

    def describe(self, arg: Optional[str]) -> DataInfo:
        try:
            return self._describe(arg)
        except ImageTooLarge as e:
            raise UsageError(f"dataset folder '{arg}': {e}") from None

    def _describe(self, arg: Optional[str]) -> DataInfo:
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
