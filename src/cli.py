"""What the three scripts share: expected errors mapped to exit codes, device choice, logging."""
import argparse
import logging
import sys
import warnings

import torch

from .errors import DataError, ScriptError, UsageError  # noqa: F401  (re-exported for the scripts)

_logger = logging.getLogger(__name__)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, description and epilog printed as written."""


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
        warnings.warn(f"--gpu {gpu} given but CUDA is not available; using --device {device}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available here; use --device cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here; use --device cpu or auto")
    return dev
