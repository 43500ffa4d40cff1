"""The expected failures of the library, with the exit code each maps to in the scripts.

The library raises these; ``src/cli.py`` turns them into one message and an exit code. Nothing in
``src/`` imports the command-line layer.
"""


class ScriptError(Exception):
    """An expected failure: printed as one message, no traceback."""
    exit_code = 1


class DataError(ScriptError):
    """Input files or data are missing or wrong (exit 1)."""
    exit_code = 1


class UsageError(ScriptError):
    """Flags or values that cannot work (exit 2, as argparse)."""
    exit_code = 2
