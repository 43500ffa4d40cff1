"""What the three scripts share: expected errors mapped to exit codes, device choice, logging."""
import argparse
import contextlib
import logging
import os
import sys
import warnings

import torch

from .errors import DataError, ScriptError, UsageError  # noqa: F401  (re-exported for the scripts)

_logger = logging.getLogger(__name__)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, description and epilog printed as written. A default of None is not shown: such
    a flag's help says what happens without it (``(default: None)`` beside it would be a second default)."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's defaults: help shows defaults, no abbreviations."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(**kwargs)


def run_main(parser, argv, body):
    """Parse argv, set up logging, call body(args); expected errors become (message on stderr, exit code).
    Returns the exit code instead of raising SystemExit, so tests and shell loops see the same codes."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors (2) and --help (0)
        return e.code
    setup_logging(getattr(args, "quiet", False))
    try:
        with library_verbosity(getattr(args, "quiet", False)):
            return body(args) or 0
    except ScriptError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def setup_logging(quiet=False):
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.captureWarnings(True)


@contextlib.contextmanager
def library_verbosity(quiet):
    """With quiet: transformers' logs below errors and the progress bars of transformers and
    huggingface_hub (e.g. "Loading weights") off for the duration; restored afterwards (tests call main()
    many times in one process)."""
    if not quiet:
        yield
        return
    undo = []
    try:
        try:
            from transformers.utils import logging as hf_logging
            level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            undo.append(lambda: (hf_logging.set_verbosity(level),
                                 hf_logging.enable_progress_bar() if bars else None))
        except ImportError:
            pass
        try:
            from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
            if not are_progress_bars_disabled():
                disable_progress_bars()
                undo.append(enable_progress_bars)
        except ImportError:
            pass
        yield
    finally:
        for f in reversed(undo):
            f()


@contextlib.contextmanager
def quiet_output(quiet):
    """With quiet: what libraries print to stdout / stderr while the block runs (pycocotools' "loading
    annotations into memory...", efficientnet's "Loaded pretrained weights", tqdm bars) goes nowhere.
    Logging keeps its own stream, so warnings still show; exceptions pass through and are reported by
    run_main after the block. Use it around loading only, never around what the script itself prints."""
    if not quiet:
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


def int_at_least(least):
    """argparse type: an int >= least."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is less than {least}")
        return value
    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def batch_size_arg(text):
    """argparse type of -b: "auto" or an int >= 1."""
    return text if text == "auto" else positive_int(text)


def workers_arg(text):
    """argparse type of -j: "auto" or an int >= 0."""
    return text if text == "auto" else non_negative_int(text)


def add_device_args(parser):
    parser.add_argument("--device", default="auto",
                        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--gpu", type=int, default=None,
                        help="the paper's flag: use cuda:N (CUDA_VISIBLE_DEVICES is never set)")


def resolve_device(device="auto", gpu=None):
    """torch.device from --device / --gpu. --gpu N means cuda:N; without CUDA it falls back to auto with
    a warning, so the paper's commands still run on a CPU machine."""
    if gpu is not None:
        if torch.cuda.is_available():
            if gpu >= torch.cuda.device_count():
                raise UsageError(f"--gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) visible")
            return torch.device(f"cuda:{gpu}")
        warnings.warn(f"--gpu {gpu} given but CUDA is not available; using --device {device}", stacklevel=2)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = check_device_name(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available here; use --device cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here; use --device cpu or auto")
    return dev


def check_device_name(device):
    """torch.device of a --device value other than auto (UsageError when it names no device), without asking
    whether this machine has it: a SLURM job's node may have a GPU that the submitting node lacks."""
    try:
        return torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
