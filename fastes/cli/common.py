"""What every command shares: exit codes, the usage error, the detector and TTA options."""
from __future__ import annotations

import argparse

from ..detect import DETECTORS
from ..face import DEFAULT_DETECTOR

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "UsageError", "TRAIN_DETECTOR", "detector_args", "tta_arg",
           "tta", "finder"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TRAIN_DETECTOR = "haar"  # the front end the shipped models were trained on


class UsageError(Exception):
    """A mistake in how the command was called (exit status 2)."""


def detector_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                   help=f"face detector (default {DEFAULT_DETECTOR}): blazeface = MediaPipe's short-range "
                   "model (fast, finds tight crops), blazeface-full = its full-range model (smaller faces), "
                   "blazeface-group = full range plus a 2x2 tile search (up to ~16 faces per image), "
                   "haar = the paper's cascade")
    p.add_argument("--detect-size", type=int, default=160, metavar="PX",
                   help="haar only: long side of the grey copy the cascade searches (default 160); "
                   "raise it for small faces in large images")
    modes = crop_modes()
    if modes:
        p.add_argument("--crop", choices=modes, default=None,
                       help="inputs that already are one tight face: 'always' takes the whole image as the "
                       "face box, 'auto' does so when the detector finds nothing in a small image, 'never' "
                       "only trusts the detector (default: the library's, see fastes.FaceFinder)")


def crop_modes() -> tuple[str, ...]:
    """The front end's crop modes (empty where this version has none)."""
    from .. import face

    return tuple(getattr(face, "CROP_MODES", ()))


def tta_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tta", type=int, default=0, metavar="N",
                   help="average each face's probabilities over N augmented copies of its landmarks "
                   "(rotated, jittered, mirrored; a two-stream model's crop mirrored in every other copy; "
                   "0 = off, the default). 8 copies: +1.0 point on FER+ valid for two_stream_int8, +2.5 "
                   "of subject-disjoint accuracy for vgg11_fast_int8, ~8x the classifier's time")


def tta(args: argparse.Namespace) -> int:
    """The ``--tta`` copies (0 where the command has no such option; usage error if < 0)."""
    n = getattr(args, "tta", 0)
    if n < 0:
        raise UsageError("--tta must be >= 0")
    return n


def finder(args: argparse.Namespace):
    """The front end the detector options ask for (usage errors for bad values)."""
    from ..face import FaceFinder

    if args.detect_size < 32:
        raise UsageError(f"--detect-size must be >= 32, got {args.detect_size}")
    kw = {"crop": args.crop} if getattr(args, "crop", None) else {}
    return FaceFinder(args.detector, detect_size=args.detect_size, **kw)
