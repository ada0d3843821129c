"""The one exception type for user errors: printed as a single line, exit code 2, no traceback."""
from __future__ import annotations

import sys
from collections.abc import Callable

INTERRUPTED_EXIT = 130  # a command stopped by Ctrl-C or SIGTERM (see ddqn.stop)


class DDQNError(Exception):
    """A user error (bad file, field or value). ``str(err)`` is the one-line message to print."""


class ConfigError(DDQNError):
    """A configuration, prototxt or solver file is invalid; the message names the file and field."""


class Interrupted(DDQNError):
    """A command was stopped by a signal (:class:`ddqn.stop.StopFlag`) and has finished cleanly: its final
    snapshot is written and its sinks are closed. Raised at a step boundary, never from a signal handler."""

    def __init__(self, message: str = "interrupted") -> None:
        super().__init__(message)


def run_command(prog: str, body: Callable[[], None]) -> int:
    """Run a command's ``body``; a user error becomes ``<prog>: error: …`` and exit code 2, a stop by a signal
    (:class:`Interrupted`) ``<prog>: interrupted`` and exit code 130."""
    try:
        body()
    except Interrupted as exc:
        _say(f"{prog}: {exc}")
        return INTERRUPTED_EXIT
    except DDQNError as exc:
        _say(f"{prog}: error: {exc}")
        return 2
    except KeyboardInterrupt:  # only a body run without a StopFlag installed (e.g. a benchmark's entry point)
        _say(f"{prog}: interrupted")
        return INTERRUPTED_EXIT
    return 0


def _say(line: str) -> None:
    """One line on stderr; a closed stderr (a pipe whose reader is gone) does not turn the exit code into a
    traceback."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass
