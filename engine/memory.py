"""Memory budget for bounding passes: how many bytes a pass may hold in working tensors at once.

`NNCERT_MEMORY` (bytes, or with a K/M/G suffix, e.g. `4G`) sets it; by default it is the smaller of 2 GiB and
half of the memory the machine has available (MemAvailable) when the pass starts: beyond a few hundred rows per
chunk, larger chunks buy little speed. Passes that would need more split their work into
chunks (CROWN: bound rows), so that a large network bounds in pieces instead of failing.
"""
from __future__ import annotations

import os

from .errors import BadSetting

DEFAULT = 2 * 2 ** 30
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def _available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2 ** 30


def budget() -> int:
    """Bytes a bounding pass may use for its working tensors."""
    s = os.environ.get("NNCERT_MEMORY", "").strip().upper().removesuffix("B")
    if not s:
        return min(DEFAULT, _available() // 2)
    unit = s[-1] if s[-1] in _UNITS and not s[-1].isdigit() else ""
    try:
        v = float(s[:-1] if unit else s) * _UNITS[unit]
    except ValueError:
        raise BadSetting(f"NNCERT_MEMORY={os.environ['NNCERT_MEMORY']!r} is not a size such as 4G or 512M") from None
    if not v > 0:
        raise BadSetting(f"NNCERT_MEMORY={os.environ['NNCERT_MEMORY']!r} must be positive")
    return int(v)


def rows_per_chunk(B: int, width: int, itemsize: int, copies: int = 32, cap: int = 4096) -> int:
    """Bound rows per chunk such that `copies` tensors of [B, rows, width] items fit the budget (at least 1).
    The default counts both signs of each row, the work tensors of a backward step and the unfolded buffer a 3x3
    transposed convolution takes on the CPU (about 9 times its output)."""
    return max(1, min(cap, budget() // max(1, B * width * itemsize * copies)))
