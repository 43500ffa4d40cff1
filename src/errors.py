"""The expected failures of the library, with the exit code each maps to in the scripts.

The library raises these; ``src/cli.py`` turns them into one message and an exit code. Nothing in
``src/`` imports the command-line layer.
"""
import contextlib
import errno
import re


class ScriptError(Exception):
    """An expected failure: printed as one message, no traceback."""
    exit_code = 1


class DataError(ScriptError):
    """Input files or data are missing or wrong (exit 1)."""
    exit_code = 1


class UsageError(ScriptError):
    """Flags or values that cannot work (exit 2, as argparse)."""
    exit_code = 2


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour codes (torch and tqdm print some)


def reason(error, limit=160):
    """A library's exception as a short clause for a message: its type and the first sentence of its first
    line, terminal codes removed, cut at a word (never mid-word) with "..." when longer than limit."""
    lines = _ANSI.sub("", str(error)).strip().splitlines()
    sentence = re.split(r"(?<=[.!?])\s", lines[0].strip(), maxsplit=1)[0] if lines else ""
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return f"{type(error).__name__}: {sentence}" if sentence else type(error).__name__


def unreadable_why(error, path=None):
    """Why torch.load(weights_only=True) refused a file, in words. torch's own text is not quoted: it advises
    loading with weights_only=False, which would run whatever code a pickled file holds."""
    text = str(error).lower()
    pickled = "unsupported global" in text
    if not pickled and "weights only load failed" in text and path is not None:
        with contextlib.suppress(OSError), open(path, "rb") as f:
            head = f.read(2)
            pickled = len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # a pickle, not a torch zip
    if pickled:
        return ("holds pickled Python objects, not plain tensors; it is not loaded, because loading them could "
                "run code. Save plain tensors (torch.save(tensor, path)) or re-create the file")
    if isinstance(error, OSError) and error.errno != errno.EINVAL:   # torch reads a cut zip as EINVAL
        return f"cannot be read ({error.strerror or reason(error)})"
    return "is truncated or corrupt (not a complete torch file)"
