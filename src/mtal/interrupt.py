"""Interrupted commands exit non-zero, so a scheduler never records an interrupted run as
a success: SIGTERM → 143, Ctrl-C (SIGINT) → 130 (128 + the signal number), with one
line saying where the run stopped and how to resume.

Lightning 2.x installs its own SIGTERM handler during ``fit``: it only sets
``trainer.received_sigterm``, and the loops then raise ``SIGTERMException``, a
``SystemExit`` *without* a code (exit status 0); on Ctrl-C it catches the
``KeyboardInterrupt`` and calls ``sys.exit(1)``. Our handler is installed first, so
Lightning chains it (it keeps an existing handler) and ours raises :class:`Interrupted`
at once; :func:`exit_code` also maps Lightning's own exits to the signal's code.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

#: the cycle the running loop is in (set by the loop driver), for the message
_state: dict[str, object] = {"cycle": None, "signal": None}


class Interrupted(BaseException):
    """Raised in the main thread when the process receives SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received signal {signum}")
        self.signum = signum


def mark_cycle(cycle: int | None) -> None:
    """Record the cycle the loop is in (shown when the run is interrupted)."""
    _state["cycle"] = cycle


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _state["signal"] = signum
    raise Interrupted(signum)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _state["signal"] = signum
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted`, SIGINT ``KeyboardInterrupt`` (and both are
    remembered) for the block; the previous handlers come back afterwards."""
    _state.update(cycle=None, signal=None)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread: leave the handlers alone
        previous = {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def exit_code(exc: BaseException) -> int | None:
    """The exit status of an interrupted command (None when ``exc`` is no interruption)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(exc, Interrupted):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    if isinstance(exc, SIGTERMException):
        return 128 + signal.SIGTERM
    received = _state["signal"]
    if isinstance(exc, SystemExit) and isinstance(received, int):
        return 128 + received  # Lightning's sys.exit(1) after it caught our interrupt
    return None


def message() -> str:
    """``interrupted at cycle c; rerun the same command to resume``."""
    cycle = _state["cycle"]
    where = "" if cycle is None else f" at cycle {cycle}"
    return f"[mtal] interrupted{where}; rerun the same command to resume"
