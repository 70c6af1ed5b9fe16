"""How a run stops on SIGTERM (a SLURM time limit, Snakemake cancelling a job, `kill`) or SIGINT
(Ctrl-C): as an exception in the main thread, so `finally` blocks run and no temporary output stays
behind, and never lost on the way.

Python runs a signal handler wherever the main thread is, and two places there lose what it raises:
- a module being imported: a compiled extension's initialisation (pybind11's) turns the exception
  into `ImportError("initialization failed")`, which an optional import catches and goes on (torch's
  probe for triton does, while open_clip imports torchvision);
- a finalizer (a `__del__` the garbage collector runs, a weakref callback): Python reports the
  exception as unraisable and goes on.
So a signal that lands during an import is sent again a moment later, and so is one a finalizer
swallowed.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Iterator

RESEND_AFTER_S = 0.05
_IMPORT_MACHINERY = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")


class Stopped(SystemExit):
    """SIGTERM raised as an exception, as SIGINT raises KeyboardInterrupt; exits 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signal = signal.Signals(signum).name


def _would_be_lost(frame: FrameType | None) -> bool:
    """Whether an exception raised at `frame` would be lost: inside an import, or inside this module
    (sending a signal again, where a new one would land in the middle of that)."""
    while frame is not None:
        if frame.f_code.co_filename in _IMPORT_MACHINERY or frame.f_code.co_filename == __file__:
            return True
        frame = frame.f_back
    return False


def _send_again(signum: int) -> None:
    # from another thread: sent from this one, the signal would be handled (and lost) right here
    timer = threading.Timer(RESEND_AFTER_S, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


def _raise(signum: int, frame: FrameType | None) -> None:
    if _would_be_lost(frame):
        _send_again(signum)
        return
    raise KeyboardInterrupt if signum == signal.SIGINT else Stopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM raises `Stopped` and SIGINT KeyboardInterrupt, neither of them lost."""
    def resend_a_swallowed_stop(unraisable: sys.UnraisableHookArgs) -> None:
        exc = unraisable.exc_value
        if isinstance(exc, Stopped):
            _send_again(signal.Signals[exc.signal])
        elif isinstance(exc, KeyboardInterrupt):
            _send_again(signal.SIGINT)
        else:
            previous_hook(unraisable)

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, resend_a_swallowed_stop
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = previous_hook
