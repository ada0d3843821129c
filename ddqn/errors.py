"""The one exception type for user errors: printed as a single line, exit code 2, no traceback."""


class DDQNError(Exception):
    """A user error (bad file, field or value). ``str(err)`` is the one-line message to print."""


class ConfigError(DDQNError):
    """A configuration, prototxt or solver file is invalid; the message names the file and field."""
