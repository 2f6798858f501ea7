"""The ``fastes`` command line: a thin layer over the Python API, one module per command
(its parser beside its handler).

Exit status: 0 when every input was processed, 1 when any input failed (unreadable,
not an image) or the output could not be written, 2 for usage errors (bad options,
nothing to read), 130 on Ctrl-C and 143 on SIGTERM (finished rows are kept). User
mistakes are reported in one line; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, TRAIN_DETECTOR, UsageError

__all__ = ["main", "UsageError", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "TRAIN_DETECTOR", "sample_images",
           "collect_inputs", "COMMANDS"]

# one module per command, in the order --help lists them
COMMANDS = ("sketch", "train", "evaluate", "crossval", "run", "bench", "convert")


def sample_images():
    """The bundled London set samples (:func:`fastes.samples.sample_images`)."""
    from ..samples import sample_images as samples

    return samples()


def collect_inputs(inputs):
    """Image files of files and folders (:func:`fastes.batch.image_files`)."""
    from ..batch import image_files

    return image_files(inputs)


def _build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="fastes",
        description="Fast facial-expression recognition on emotion sketches "
        "(Costache & Popescu): faces -> 68 landmarks -> normalized line drawings.",
    )
    parser.add_argument("--version", action="version", version=f"fastes {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status. Ctrl-C at any point (start-up included)
    exits quietly with 130."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("fastes: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    from ..batch import OutputError, Terminated

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ log lines are noise here
    parser = _build_parser()
    args = parser.parse_args(argv)  # argparse exits with 2 on usage errors
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.handler(args)
    except UsageError as e:
        print(f"fastes {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated as e:
        print(f"fastes: terminated ({e})", file=sys.stderr)
        return 143
    except OutputError as e:
        if args.debug:
            raise
        print(f"fastes {args.command}: error: {e.strerror}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # unexpected: one line unless --debug
        if args.debug:
            raise
        print(f"fastes {args.command}: error: {type(e).__name__}: {e} (run with --debug for details)", file=sys.stderr)
        return EXIT_FAILED
