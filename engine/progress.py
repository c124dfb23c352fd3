"""Progress lines for `verify -v`: `nncert: [  12.3s] STAGE key=value ...` on stderr, seconds since the command
started (NNCERT_T0). On when NNCERT_VERBOSE=1 (set by -v and inherited by worker processes); otherwise each call costs one
environment lookup. Repeated events of one stage (branch and bound batches) are shown at most once per second."""
from __future__ import annotations

import os
import sys
import time

_T0 = float(os.environ.get("NNCERT_T0", time.perf_counter()))   # the CLI's start (time.perf_counter is system-wide)
_last: dict[str, float] = {}


def enabled() -> bool:
    return os.environ.get("NNCERT_VERBOSE") == "1"


def report(stage: str, every: float = 0.0, **fields) -> None:
    """One progress line; with every > 0, skipped when the same stage was shown less than `every` seconds ago."""
    if not enabled():
        return
    now = time.perf_counter()
    if every and now - _last.get(stage, -1e9) < every:
        return
    _last[stage] = now
    text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
    print(f"nncert: [{now - _T0:7.1f}s] {stage} {text}".rstrip(), file=sys.stderr, flush=True)
