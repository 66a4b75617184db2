"""Test crash hooks: ``MTAL_CRASH_AT=<point>:<n>[,...]`` SIGKILLs the process the n-th
time it reaches a named point of a cycle, so tests can crash between two exact writes."""

from __future__ import annotations

import os
import signal
import sys

#: where ``MTAL_CRASH_AT`` may kill the process (in the order a cycle reaches them;
#: ``before_state_write`` fires at every state.json write)
CRASH_POINTS = (
    "after_fit",
    "before_select",
    "after_select",
    "before_state_write",
    "before_pool_write",
    "after_pool_write",
)
CRASH_ENV = "MTAL_CRASH_AT"
_crash_counts: dict[str, int] = {}


def parse_crash_spec(text: str) -> dict[str, int]:
    """``"after_fit:2,before_pool_write:1"`` → ``{"after_fit": 2, "before_pool_write": 1}``."""
    wanted: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition(":")
        if name not in CRASH_POINTS or not count.isdigit() or int(count) < 1:
            raise ValueError(
                f"{CRASH_ENV}={text!r}: {part!r} is not <point>:<n> with n >= 1 and point one "
                f"of {list(CRASH_POINTS)}"
            )
        wanted[name] = int(count)
    return wanted


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process the n-th time it reaches ``name`` when
    ``MTAL_CRASH_AT`` asks for it (a no-op when the variable is unset)."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    wanted = parse_crash_spec(spec)
    if name not in wanted:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == wanted[name]:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
