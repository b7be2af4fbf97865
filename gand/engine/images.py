"""Reading images a user points gand at, safely: regular files only, and a pixel limit.

A FIFO named `x.png` in a data folder would block the reader forever, so only regular files are
ever opened. An image whose header claims billions of pixels (a decompression bomb) would make
PIL allocate tens of GB; gand refuses any image above GAND_MAX_IMAGE_PIXELS (64 million by
default) from its header alone, before decoding it, and turns PIL's own DecompressionBombWarning
into that refusal, so PIL never merely warns.
"""
from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any

from gand import settings
from gand.errors import UsageError


class ImageTooLarge(UsageError):
    """An image with more pixels than gand's limit (GAND_MAX_IMAGE_PIXELS)."""


def is_regular_file(path: Path | str) -> bool:
    """True for a regular file (or a link to one): never a FIFO, socket or device, which
    would block or never end when read. Found with stat(), which opens nothing."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):  # gone, unreadable, or a name with a NUL byte
        return False


def pixel_limit() -> int:
    return settings.max_image_pixels()


_warning_is_error = False


def _guard() -> Any:
    """PIL, with gand's pixel limit as its own and its bomb warning made an error."""
    global _warning_is_error
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = pixel_limit()
    if not _warning_is_error:
        # Once per process, and process-wide (catch_warnings is not thread-safe, and the folder
        # dataset reads images in threads): above the limit, Image.open raises, never warns.
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
        _warning_is_error = True
    return Image


def open_image(path: Path) -> Any:
    """PIL's lazily decoded image for a regular file within the pixel limit.

    Raises ImageTooLarge above the limit (from the header; nothing is decoded) and lets PIL's
    own errors through for files it cannot read; never opens a file that is not regular.
    """
    Image = _guard()
    if not is_regular_file(path):
        raise OSError(f"{path} is not a regular file")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        im = Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(path, int(found.group(1)) if found else None, limit) from None
    w, h = im.size
    if w * h > limit:
        im.close()
        raise _too_large(path, w * h, limit)
    return im


def _too_large(path: Path, pixels: int | None, limit: int) -> ImageTooLarge:
    size = f"{pixels} pixels" if pixels else "too many pixels"
    return ImageTooLarge(f"image '{path}' has {size}, over gand's limit of {limit} "
                         f"(GAND_MAX_IMAGE_PIXELS); shrink it or move it out of the folder")
