"""The bytes of a torch checkpoint file, laid out so that writing them leaves the GIL free.

`torch.save` copies every tensor's bytes into the file while holding the interpreter lock. In
the background checkpoint writer that stalls the training thread's Python — on a GPU its kernel
launches — for the whole copy. Measured on this project's 2-core machine: a Python loop beside
`torch.save` writing an 80 MB state into memory ran at 16% of its pace; beside whole checkpoint
writes (hash and fsync included, which release the lock) of CycleGAN 256's 399 MB, at 68%.

Here `torch.save` writes only the file's skeleton (the pickled structure and the zip records'
headers, `torch.serialization.skip_data`), into a recorder that keeps the bytes it is given and
the gaps it seeks over. The gaps are the tensors' bytes: they are filled from memoryviews of the
storages themselves, and their CRC-32s patched into the local and central zip headers. zlib,
hashlib and file writes all release the lock for large buffers. The result is the file
`torch.save` writes — same records, same sizes, same CRCs — read by `torch.load` as ever.

Where the skeleton is not what this expects (a torch that lays files out otherwise, zip64, or
no `skip_data`), the state is written by `torch.save` into memory instead: slower for the loop
beside it, never wrong.
"""
from __future__ import annotations

import io
import logging
import pickle
import struct
import zlib
from typing import Any, Union

import torch
from torch.storage import TypedStorage

log = logging.getLogger("gand.engine")

Buffer = Union[bytes, bytearray, memoryview]

_LOCAL = b"PK\x03\x04"  # a zip local file header: CRC-32 at +14
_CENTRAL = b"PK\x01\x02"  # a central directory entry: CRC-32 at +16, local header offset at +42
_END = b"PK\x05\x06"  # the end of the central directory: entries at +10, its offset at +16


_warned = False  # the fallback is logged as a warning once a process, then as debug


class LayoutError(Exception):
    """The skeleton torch wrote is not laid out as expected."""


def pieces(state: Any) -> list[Buffer]:
    """The checkpoint file for `state`, as buffers in file order (their total is the file).

    Tensor bytes are views of the live storages, not copies: `state` must not change until
    the pieces are written (the writer hands it a host copy nobody else touches).
    """
    try:
        return _laid_out(state)
    except Exception as e:  # a layout it does not expect, or skip_data (a prototype) changed:
        # torch.save then writes the file, or raises its own error for a state it cannot save.
        global _warned
        (log.debug if _warned else log.warning)(
            "checkpoint written by torch.save in memory (%s: %s)", type(e).__name__, e)
        _warned = True
        buf = io.BytesIO()
        torch.save(state, buf)
        return [buf.getbuffer()]


def _laid_out(state: Any) -> list[Buffer]:
    # Keyed as torch keys them (data/<k>, k counting every storage); empty ones leave no gap.
    storages = {k: s for k, s in enumerate(_storages_in_save_order(state)) if s.nbytes()}
    if any(s.device.type != "cpu" for s in storages.values()):
        raise LayoutError("a tensor is not in host memory")
    skeleton = _Recorder()
    with torch.serialization.skip_data():
        torch.save(state, skeleton)
    runs, gaps = skeleton.runs()
    if [size for _, size in gaps] != [s.nbytes() for s in storages.values()]:
        raise LayoutError(f"{len(gaps)} gaps in the skeleton for {len(storages)} storages")
    data = [_bytes_of(s) for s in storages.values()]
    _patch_crcs(runs, gaps, list(storages), [zlib.crc32(d) for d in data])
    out: list[Buffer] = []
    for (_, run), d in zip(runs, data):
        out += [run, d]
    out.append(runs[-1][1])
    return [p for p in out if len(p)]


def _storages_in_save_order(state: Any) -> list[torch.UntypedStorage]:
    """Storages in the order torch.save numbers them: the order its pickler meets them
    (torch.serialization._save keys them by first encounter and writes them in that order)."""
    seen: dict[int, torch.UntypedStorage] = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, TypedStorage) or torch.is_storage(obj):
                storage = obj._untyped_storage if isinstance(obj, TypedStorage) else obj
                seen.setdefault(storage._cdata, storage)
                return "storage"
            return None

    class Sink:
        def write(self, b: Buffer) -> int:
            return len(b)

    Pickler(Sink(), protocol=2).dump(state)  # protocol 2: torch.save's default
    return list(seen.values())


def _bytes_of(storage: torch.UntypedStorage) -> memoryview:
    return memoryview(torch.empty(0, dtype=torch.uint8).set_(storage).numpy()).cast("B")


class _Recorder:
    """A seekable file for torch.save that keeps what is written and where it seeks over."""

    def __init__(self) -> None:
        self.pos = 0
        self.writes: list[tuple[int, bytes]] = []

    def write(self, b: Buffer) -> int:
        self.writes.append((self.pos, bytes(b)))
        self.pos += len(b)
        return len(b)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: 0, 1: self.pos}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def runs(self) -> tuple[list[tuple[int, bytearray]], list[tuple[int, int]]]:
        """The written bytes as contiguous runs (start, bytes) and the gaps (start, size) between
        them: runs[i] ends where gaps[i] begins, and one run more ends the file."""
        runs: list[tuple[int, bytearray]] = []
        gaps: list[tuple[int, int]] = []
        end = 0
        for pos, b in sorted(self.writes, key=lambda w: w[0]):
            if pos < end:
                raise LayoutError("torch.save wrote over its own bytes")
            if pos > end or not runs:
                if runs:
                    gaps.append((end, pos - end))
                runs.append((pos, bytearray()))
            runs[-1][1].extend(b)
            end = pos + len(b)
        if not runs or runs[0][0] != 0:
            raise LayoutError("the file does not begin with written bytes")
        return runs, gaps


def _patch_crcs(runs: list[tuple[int, bytearray]], gaps: list[tuple[int, int]],
                keys: list[int], crcs: list[int]) -> None:
    """Writes each gap's CRC-32 into its record's local header (the last one before the gap,
    named `.../data/<k>` for the k-th storage) and into the central directory entry that points
    at that header."""
    header_at: dict[int, int] = {}  # local header offset → CRC
    for (start, run), (gap, _), k, crc in zip(runs, gaps, keys, crcs):
        i = run.rfind(_LOCAL)
        if i < 0:
            raise LayoutError("no local header before a tensor's bytes")
        name_len, extra_len = struct.unpack_from("<2H", run, i + 26)
        name = bytes(run[i + 30:i + 30 + name_len])
        if start + i + 30 + name_len + extra_len != gap or not name.endswith(b"/data/%d" % k):
            raise LayoutError(f"the record before storage {k}'s bytes is {name!r}")
        struct.pack_into("<I", run, i + 14, crc)
        header_at[start + i] = crc
    tail_start, tail = runs[-1]
    end = tail.rfind(_END)
    if end < 0:
        raise LayoutError("no end of central directory")
    count, _, cd_offset = struct.unpack_from("<HII", tail, end + 10)
    at = cd_offset - tail_start
    patched = 0
    for _ in range(count):
        if at < 0 or tail[at:at + 4] != _CENTRAL:  # zip64 offsets (0xFFFFFFFF) land here
            raise LayoutError("the central directory is not where its end says")
        (offset,) = struct.unpack_from("<I", tail, at + 42)
        if offset in header_at:
            struct.pack_into("<I", tail, at + 16, header_at[offset])
            patched += 1
        at += 46 + sum(struct.unpack_from("<3H", tail, at + 28))
    if patched != len(header_at):
        raise LayoutError(f"{patched} of {len(header_at)} central directory entries found")
