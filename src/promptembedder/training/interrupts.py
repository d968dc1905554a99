"""Ctrl-C (SIGINT) and a scheduler's SIGTERM stop training the same way: checkpoint, then exit 128 + signal.

Both become a `KeyboardInterrupt` that carries its signal number, so one `except KeyboardInterrupt` saves the
state; the CLI then exits 130 (SIGINT) or 143 (SIGTERM), as shells and schedulers expect, so `train && evaluate`
does not go on with a partial model.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal, as a KeyboardInterrupt that says which one."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_of(err: KeyboardInterrupt) -> int:
    """The signal behind an interrupt (a plain KeyboardInterrupt is Ctrl-C)."""
    return getattr(err, "signum", signal.SIGINT)


#: Stop signals received since `catch_stop_signals`. Their exception can be lost: a handler runs wherever the
#: interpreter is, and an exception raised inside a finalizer (`__del__`, a weakref callback) is only printed, so
#: the loop also checks here at every step (`raise_pending`).
_pending: list[int] = []


def _raise(signum, frame) -> None:
    _pending.append(signum)
    raise Interrupted(signum)


def _heeded() -> list[int]:
    """The stop signals this process listens to: one it was started ignoring stays ignored, as Python itself keeps
    Ctrl-C ignored for a job started in the background (`nohup ... &` in a script)."""
    return [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]


def catch_stop_signals() -> Callable[[], None]:
    """From now on SIGINT and SIGTERM interrupt training and are remembered (main thread only); returns the function
    that restores the previous handlers (ignored signals stay ignored, see `_heeded`)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    _pending.clear()
    previous = {s: signal.signal(s, _raise) for s in _heeded()}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    return restore


def raise_pending() -> None:
    """Raise a stop signal received earlier whose exception was lost (see `_pending`): the run still stops."""
    if _pending:
        raise Interrupted(_pending[0])


@contextlib.contextmanager
def deferred_interrupt():
    """Hold SIGINT and SIGTERM back while the block runs and raise after it, so a checkpoint written on a stop
    never holds a half-applied update (only possible in the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in _heeded()}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        raise Interrupted(caught[0])
