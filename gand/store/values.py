"""Values every database gand supports can hold: the store refuses the others before writing.

SQLite would raise OverflowError for an int beyond 64 bits, PostgreSQL "integer out of range"
beyond 32 for an Integer column, its JSON refuses Infinity and NaN, its text refuses NUL. A
value refused here is refused alike on every backend, with its name.
"""
from __future__ import annotations

import math
from typing import Any

from gand.errors import UsageError

INT32 = 2**31 - 1  # Integer columns are 32-bit on PostgreSQL
INT64 = 2**63 - 1  # and 64-bit in SQLite and in what gand puts in JSON


def check_storable(what: str, value: Any, int_limit: int = INT64) -> None:
    """Refuses, on every database alike, a value one of them could not hold: an integer beyond
    its column (or 64 bits), a float that is not finite (JSON has no Infinity or NaN), text with
    a NUL byte (PostgreSQL refuses it). Callers check with the user's words first; this is the
    store's own guard, so that no backend ever decides differently."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if not -int_limit - 1 <= value <= int_limit:
            raise UsageError(f"{what} = {value} is too large to store; expected at most "
                             f"{int_limit}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise UsageError(f"{what} = {value} cannot be stored; expected a finite number")
    elif isinstance(value, str):
        if "\x00" in value:
            raise UsageError(f"{what} = {value!r} cannot be stored: it holds a NUL character")
    elif isinstance(value, dict):
        for k, v in value.items():
            check_storable(f"{what}.{k}", str(k))
            check_storable(f"{what}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_storable(f"{what}[{i}]", v)
