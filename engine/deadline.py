"""Time budgets inside long bounding passes: `within(t)` makes time.perf_counter() value t the deadline of the
code it wraps (nested deadlines keep the earliest); passes call `check()` between units of work (CROWN: each
chunk of bound rows) and it raises OutOfTime once the deadline has passed. Outside any `within` it never raises.
A pass cut short this way yields no bound, so no verdict can rest on it."""
from __future__ import annotations

import contextvars
import math
import time
from contextlib import contextmanager

from .errors import NncertError

_DEADLINE = contextvars.ContextVar("nncert_deadline", default=math.inf)


class OutOfTime(NncertError):
    """A bounding pass ran past the deadline of its caller."""


@contextmanager
def within(deadline: float):
    token = _DEADLINE.set(min(deadline, _DEADLINE.get()))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check() -> None:
    if time.perf_counter() > _DEADLINE.get():
        raise OutOfTime("deadline passed")
