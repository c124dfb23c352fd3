"""Memory budgets, in bytes.

`NNCERT_MEMORY` (or `--memory`; bytes, or with a K/M/G suffix, e.g. `4G`) is the resident memory one verifying
process may use. `verify --timeout` and `bench` run the work in a worker process that is killed when it passes
that cap (engine/workers.py; the instance is then reported `unknown`, never as a crash); `bench --jobs N`
divides it among the workers. Unset, the cap is CAP_SHARE of the memory the machine has available (MemAvailable).

Inside a process, a bounding pass may hold budget() bytes of working tensors at once: half of NNCERT_MEMORY (the
rest is for the runtime, the network and transient copies), or, unset, the smaller of 2 GiB and half of
MemAvailable: beyond a few hundred rows per chunk, larger chunks buy little speed. Passes that would need more
split their work into chunks (CROWN: bound rows; branch and bound: subdomain batches), so that a large network
bounds in pieces instead of failing.
"""
from __future__ import annotations

import os

from .errors import BadSetting

DEFAULT = 2 * 2 ** 30
CAP_SHARE = 0.8
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


def parse_size(text: str, what: str = "NNCERT_MEMORY") -> int:
    """Bytes from '4G', '512M', '1.5g', '1000000' (raises BadSetting naming `what`)."""
    s = text.strip().upper().removesuffix("B")
    unit = s[-1] if s and s[-1] in _UNITS and not s[-1].isdigit() else ""
    try:
        v = float(s[:-1] if unit else s) * _UNITS[unit]
    except ValueError:
        raise BadSetting(f"{what}={text!r} is not a size such as 4G or 512M") from None
    if not v > 0:
        raise BadSetting(f"{what}={text!r} must be positive")
    return int(v)


def process_cap() -> int:
    """Bytes of resident memory one verifying process may use (NNCERT_MEMORY, else CAP_SHARE of MemAvailable)."""
    s = os.environ.get("NNCERT_MEMORY", "").strip()
    return parse_size(s) if s else int(CAP_SHARE * _available())


def budget() -> int:
    """Bytes a bounding pass may use for its working tensors."""
    s = os.environ.get("NNCERT_MEMORY", "").strip()
    return parse_size(s) // 2 if s else min(DEFAULT, _available() // 2)


def rows_per_chunk(B: int, width: int, itemsize: int, copies: int = 32, cap: int = 4096) -> int:
    """Bound rows per chunk such that `copies` tensors of [B, rows, width] items fit the budget (at least 1).
    The default counts both signs of each row, the work tensors of a backward step and the unfolded buffer a 3x3
    transposed convolution takes on the CPU (about 9 times its output)."""
    return max(1, min(cap, budget() // max(1, B * width * itemsize * copies)))
