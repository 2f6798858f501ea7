"""``fastes sketch``: face photos to emotion sketches, one PNG per face."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, UsageError, detector_args, finder


def add_parser(sub) -> None:
    sk = sub.add_parser(
        "sketch",
        help="turn face photos into emotion sketches (one PNG per face)",
        description="Detect faces (BlazeFace by default, or the paper's Haar cascade), place 68 landmarks (dlib) and draw each "
        "face's emotion sketch: brows, eyes and mouth remapped as in the paper, 7-px lines "
        "on a 250x250 canvas. Writes <stem>_face<k>.png per face (k = 0, 1, ... left to "
        "right); files found in folders keep their sub-folder under --out.",
        epilog="With no INPUT, the bundled London set samples (CC BY 4.0) are used. "
        "Exit status: 0 all inputs read, 1 some input unreadable, 2 usage error.",
    )
    sk.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders (searched recursively)")
    sk.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created if missing)")
    sk.add_argument("--size", type=int, default=250, help="sketch size in px; the drawing scales with it (default 250)")
    sk.add_argument("--thickness", type=float, default=7, help="line thickness at 250 px, OpenCV's convention (default 7)")
    sk.add_argument("--landmarks", action="store_true", help="also write <stem>_landmarks.png: the input with boxes and the 68 points drawn")
    detector_args(sk)
    sk.add_argument("--no-progress", action="store_true", help="no progress bar")
    sk.add_argument("--quiet", "-q", action="store_true", help="print only errors and the summary")
    sk.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..annotate import overlay
    from ..batch import image_files
    from ..io import ImageError, read_image, to_grey, write_png_atomic
    from ..samples import sample_images
    from ..sketch import DegenerateFaceError, sketch

    if args.size < 8:
        raise UsageError(f"--size must be >= 8, got {args.size}")
    if not args.thickness > 0:
        raise UsageError(f"--thickness must be > 0, got {args.thickness}")
    front = finder(args)
    if args.inputs:
        items = image_files(args.inputs)
    else:
        items = [(p, Path(p.name)) for p in sample_images()]
        if not args.quiet:
            print(f"no INPUT given: using the {len(items)} bundled London set samples (CC BY 4.0, "
                  "DeBruine & Jones 2017, doi:10.6084/m9.figshare.5047666.v5)", file=sys.stderr)
    if not items:
        raise UsageError("no image files found in the given inputs")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    n_faces = n_noface = 0
    failed: list[str] = []
    taken: set[Path] = set()
    t0 = time.perf_counter()
    bar = tqdm(items, unit="img", disable=args.no_progress or len(items) < 2 or None, file=sys.stderr)
    for path, rel in bar:
        try:
            image = read_image(path)
            faces = front(image)
        except (ImageError, Exception) as e:  # one bad input never ends the run
            failed.append(str(path))
            tqdm.write(f"skipped: {e}", file=sys.stderr)
            continue
        stem = _unique_stem(out_dir / rel.parent / rel.stem, taken)
        stem.parent.mkdir(parents=True, exist_ok=True)
        if len(faces) == 0:
            n_noface += 1
            if not args.quiet:
                tqdm.write(f"no face: {path}", file=sys.stderr)
        for k in range(len(faces)):
            try:
                img = sketch(faces.landmarks[k], size=args.size, thickness=args.thickness)
            except DegenerateFaceError as e:
                tqdm.write(f"{path}: face {k} skipped: {e}", file=sys.stderr)
                continue
            write_png_atomic(f"{stem}_face{k}.png", img)
            n_faces += 1
        if args.landmarks:
            write_png_atomic(f"{stem}_landmarks.png", overlay(to_grey(image), faces))
    dt = time.perf_counter() - t0
    n_images = len(items) - len(failed)
    print(f"{n_images} images, {n_faces} faces, {n_noface} images without a face, "
          f"{len(failed)} unreadable files; {dt:.2f} s; sketches in {out_dir}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _unique_stem(stem: Path, taken: set[Path]) -> Path:
    """Output stems never collide: a second `a.jpg` from another input becomes `a_2`."""
    cand, i = stem, 1
    while cand in taken:
        i += 1
        cand = stem.with_name(f"{stem.name}_{i}")
    taken.add(cand)
    return cand
