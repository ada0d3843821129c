"""Ctrl-C and SIGTERM: a flag the loops check at their step boundaries, never an exception raised mid-step.

An entry point (``ddqn``, ``spark_jobs/train.py``) installs one :class:`StopFlag` around its command::

    with StopFlag("interrupted: finishing this step, then a final snapshot") as stop:
        trainer.train(steps, stop=stop)    # returns at the next step boundary once stop.is_set()

The first SIGINT or SIGTERM only sets the flag and writes one line to stderr; the loop notices it at its next
step boundary and the command finishes cleanly (final snapshot, sinks closed, exit code 130). A second signal
at least :data:`GRACE_S` after the first writes one line and ends the process at once with ``os._exit(130)``; one
within :data:`GRACE_S` is the same stop (one line, nothing else): GNU ``timeout`` and some CI runners forward
SIGINT to the process group again, so one Ctrl-C can arrive twice within milliseconds. Loops accept any object
with ``is_set()`` (a :class:`StopFlag`, :data:`NEVER`, a ``threading.Event`` in tests).

The handler sets an attribute and calls ``os.write``: it takes no lock and raises nothing, so whatever the
main thread was doing when the signal came (a TensorBoard queue, tqdm, Caffe) carries on undisturbed.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Protocol

EXIT_CODE = 130  # what a shell reports for a command ended by Ctrl-C
SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; spark-submit, docker and cluster managers send SIGTERM
POLL_S = 0.05  # how often sleep_unless looks at the flag
GRACE_S = 1.0  # a second signal sooner than this after the first is the same stop (a wrapper's forwarded copy)


class Stoppable(Protocol):
    """What the loops take: something that says whether a stop was requested."""

    def is_set(self) -> bool: ...


class _Never:
    """A flag that is never set (library callers that install no signal handlers)."""

    def is_set(self) -> bool:
        return False


NEVER: Stoppable = _Never()


class StopFlag:
    """SIGINT/SIGTERM handlers for the duration of a ``with`` block: the first signal sets the flag, a later one
    (at least :data:`GRACE_S` after it) exits at once.

    Args:
        message: the line written to stderr on the first signal, e.g. ``"interrupted: stopping workers"``
            (the signal's name and how to exit at once are appended).
        signals: the signals to handle (default SIGINT and SIGTERM).

    ``__enter__`` installs the handlers (only the main thread can; elsewhere the flag is only set by
    :meth:`set`), ``__exit__`` restores the previous ones. ``signum`` is the signal that set the flag.
    """

    def __init__(self, message: str = "interrupted: stopping at the next step", signals=SIGNALS) -> None:
        self.message = message
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._set_at = 0.0  # time.monotonic() when the flag was set
        self._previous: dict[int, object] = {}

    def is_set(self) -> bool:
        return self.signum is not None

    def set(self, signum: int = signal.SIGINT) -> None:
        """Request a stop, as the first signal does (without the message)."""
        if self.signum is None:
            self.signum, self._set_at = signum, time.monotonic()

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            if time.monotonic() - self._set_at < GRACE_S:  # e.g. a wrapper forwarding the same Ctrl-C to the group
                _write(f"\n{name} again within {GRACE_S:g} s: the same stop (send it later to exit at once)\n")
                return
            _write(f"\n{name} again: exiting at once (no final snapshot)\n")
            os._exit(EXIT_CODE)
        self.set(signum)
        _write(f"\n{self.message} ({name}; send it again after {GRACE_S:g} s to exit at once)\n")


def _write(text: str) -> None:
    """Write to stderr's file descriptor directly: no buffer and no lock a signal handler could deadlock on."""
    try:
        os.write(2, text.encode())
    except OSError:  # stderr closed, or a pipe whose reader is gone (spark-submit's JVM after Ctrl-C)
        pass


def sleep_unless(stop: Stoppable, seconds: float) -> bool:
    """Sleep up to ``seconds``, returning early (True) as soon as ``stop`` is set; False after a full sleep."""
    end = time.monotonic() + seconds
    while not stop.is_set():
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, POLL_S))
    return True
