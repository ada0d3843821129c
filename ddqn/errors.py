"""The one exception type for user errors: printed as a single line, exit code 2, no traceback."""
from __future__ import annotations

import sys
from collections.abc import Callable


class DDQNError(Exception):
    """A user error (bad file, field or value). ``str(err)`` is the one-line message to print."""


class ConfigError(DDQNError):
    """A configuration, prototxt or solver file is invalid; the message names the file and field."""


def run_command(prog: str, body: Callable[[], None]) -> int:
    """Run a command's ``body``; a user error becomes ``<prog>: error: …`` and exit code 2, Ctrl-C 130."""
    try:
        body()
    except DDQNError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
