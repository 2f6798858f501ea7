"""The ``fastes`` command line: a thin layer over the Python API.

Exit status: 0 when every input was processed, 1 when any input failed (unreadable,
not an image), 2 for usage errors (bad options, nothing to read). User mistakes are
reported in one line; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in how the command was called (exit status 2)."""


def sample_images() -> list[Path]:
    """The bundled London set sample images (CC BY 4.0; see their ATTRIBUTION.md)."""
    folder = resources.files("fastes") / "data" / "samples"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".jpg"))


def collect_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """Expand files and folders (recursive) into ``(file, name relative to its root)``.

    Folders contribute files with image suffixes; files named explicitly are always
    tried, whatever their suffix, so a mislabelled file is reported, not skipped.
    """
    from .io import IMAGE_SUFFIXES

    out: list[tuple[Path, Path]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            out.extend((f, f.relative_to(p)) for f in files)
        else:
            out.append((p, Path(p.name)))  # missing files are reported when read
    return out


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="fastes",
        description="Fast facial-expression recognition on emotion sketches "
        "(Costache & Popescu): faces -> 68 landmarks -> normalized line drawings.",
    )
    parser.add_argument("--version", action="version", version=f"fastes {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sk = sub.add_parser(
        "sketch",
        help="turn face photos into emotion sketches (one PNG per face)",
        description="Detect faces (Haar cascade), place 68 landmarks (dlib) and draw each "
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
    sk.add_argument("--detect-size", type=int, default=160, metavar="PX",
                    help="long side of the grey copy the detector searches (default 160); raise it for small faces in large images")
    sk.add_argument("--no-progress", action="store_true", help="no progress bar")
    sk.add_argument("--quiet", "-q", action="store_true", help="print only errors and the summary")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)  # argparse exits with 2 on usage errors
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return {"sketch": cmd_sketch}[args.command](args)
    except UsageError as e:
        print(f"fastes {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fastes: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # unexpected: one line unless --debug
        if args.debug:
            raise
        print(f"fastes {args.command}: error: {type(e).__name__}: {e} (run with --debug for details)", file=sys.stderr)
        return EXIT_FAILED


def cmd_sketch(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    from tqdm import tqdm

    from .face import FaceFinder
    from .io import ImageError, read_image, to_grey, write_png_atomic
    from .sketch import DegenerateFaceError, sketch

    if args.size < 8:
        raise UsageError(f"--size must be >= 8, got {args.size}")
    if not args.thickness > 0:
        raise UsageError(f"--thickness must be > 0, got {args.thickness}")
    if args.detect_size < 32:
        raise UsageError(f"--detect-size must be >= 32, got {args.detect_size}")
    if args.inputs:
        items = collect_inputs(args.inputs)
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

    finder = FaceFinder(detect_size=args.detect_size)
    n_faces = n_noface = 0
    failed: list[str] = []
    taken: set[Path] = set()
    t0 = time.perf_counter()
    bar = tqdm(items, unit="img", disable=args.no_progress or len(items) < 2 or None, file=sys.stderr)
    for path, rel in bar:
        try:
            image = read_image(path)
            faces = finder(image)
        except ImageError as e:
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
            write_png_atomic(f"{stem}_landmarks.png", _overlay(to_grey(image), faces, cv2, np))
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


def _overlay(grey, faces, cv2, np):
    """The input (grey, as the front end saw it) with boxes and the 68 points drawn."""
    vis = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    scale = max(1, round(max(grey.shape) / 500))
    for (x, y, w, h), pts in zip(faces.boxes, faces.image_landmarks()):
        cv2.rectangle(vis, (int(x), int(y)), (int(x + w), int(y + h)), (0, 200, 0), scale)
        for px, py in np.round(pts).astype(int):
            cv2.circle(vis, (int(px), int(py)), scale + 1, (0, 0, 255), -1)
    return vis


if __name__ == "__main__":  # python -m fastes.cli
    sys.exit(main())
