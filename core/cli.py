"""The `lunarseg` command: one parser, subcommands registered by each layer.

Each module in COMMAND_MODULES exposes `register(subparsers)`; it must stay light (no TensorFlow,
no onnxruntime at import) so that `lunarseg segment` starts fast on a board. Handlers import what
they need when they run.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from lunarseg import __version__
from lunarseg.runtime import interrupts
from lunarseg.runtime.errors import LunarsegError

# Order is the order in `lunarseg --help`.
COMMAND_MODULES = (
    "lunarseg.data.cli",
    "lunarseg.train.cli",
    "lunarseg.export.cli",
    "lunarseg.runtime.cli",
    "lunarseg.benchmarks.cli",
    "lunarseg.demo",
    "lunarseg.bundle",
)
# What to do after a stop signal, for the subcommands that keep their finished work.
RESUME_HINTS = {"train": "run the same command with --resume to continue from the last finished epoch",
                "compress": "run the same command with --resume to continue the interrupted variant",
                "demo": "run the same command again to continue: finished stages are kept"}
# Subcommands that load TensorFlow in this process (the others never do).
TENSORFLOW_COMMANDS = {"train", "evaluate", "compress", "export", "demo"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lunarseg",
        description="Lunar rock segmentation: synthetic data, U-Net training, pruning, int8, "
        "TFLite/ONNX export, a lean runtime and benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"lunarseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class MissingTrainingStack(LunarsegError):
    """A TensorFlow subcommand on a runtime-only install."""


def _require_tensorflow(command: str) -> None:
    """Import TensorFlow (quietly) and the training stack, or say in one line what to install."""
    from lunarseg.train.tf_env import import_tensorflow_quietly

    try:
        import_tensorflow_quietly()
        import tf_keras  # noqa: F401
    except ImportError as exc:
        raise MissingTrainingStack(f"needs TensorFlow ({exc.name or 'tensorflow'} is not installed): "
                                   "pip install 'lunarseg[train]'") from None


def needs_tensorflow(args) -> bool:
    """A TensorFlow subcommand, unless it only evaluates an exported .onnx/.tflite file (the runtime opens those)."""
    if args.command not in TENSORFLOW_COMMANDS:
        return False
    if args.command == "evaluate":
        from lunarseg.runtime.backends import SUFFIXES

        return os.path.splitext(str(args.model))[1].lower() not in SUFFIXES
    return True


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; known failures print one line and return a non-zero code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with interrupts.sigterm_as_interrupt():
            if needs_tensorflow(args):
                _require_tensorflow(args.command)
            code = args.func(args)
    except LunarsegError as exc:
        print(f"lunarseg {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (interrupts.Terminated)
        status, word = interrupts.exit_status(exc)
        hint = RESUME_HINTS.get(args.command)
        print(f"lunarseg {args.command}: {word}" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return status
    except OSError as exc:  # permissions, full disk, missing directories: one line, no traceback
        print(f"lunarseg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return int(code or 0)
