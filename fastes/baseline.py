"""The paper's pipeline as it describes it, for the "before" column of every ratio.

`fastes bench` and the benchmarks time it beside fastes. Faithful to the method, written the straightforward way: Haar on the
full-resolution image, the face crop resized to 250x250, dlib landmarks, a per-point
Python loop for the remapping, segment-by-segment ``cv2.line`` at 250x250, the sketch
written as PNG and read back (the paper saved its sketches), then resized to the
network's input and given to Keras ``predict`` one sketch at a time. Models are loaded
once (loading them per image would only make the baseline slower).
"""
from __future__ import annotations

import os
import tempfile

import cv2
import numpy as np

CROP = 250
TARGET = {"x0": 10, "x16": 240, "y27": 70, "y33": 210}
PARTS = [(17, 21, False), (22, 26, False), (36, 41, True), (42, 47, True), (48, 59, True)]


def detect_full(grey: np.ndarray, cascade) -> list[tuple[int, int, int, int]]:
    """Haar cascade on the full-resolution grey image, OpenCV's default parameters."""
    return [tuple(int(v) for v in b) for b in cascade.detectMultiScale(grey)]


def landmarks(grey: np.ndarray, box, predictor) -> list[tuple[float, float]]:
    """Crop, resize to 250x250, dlib 68 points (as a Python list of pairs)."""
    import dlib

    x, y, w, h = box
    crop = cv2.resize(grey[y:y + h, x:x + w], (CROP, CROP))
    shape = predictor(crop, dlib.rectangle(0, 0, CROP - 1, CROP - 1))
    return [(float(p.x), float(p.y)) for p in shape.parts()]


def remap_loop(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Equations (1) and (2), then brows/eyes 50 px down and the mouth 70 px up, point by point."""
    x0, x16 = pts[0][0], pts[16][0]
    y27, y33 = pts[27][1], pts[33][1]
    out = []
    for i, (x, y) in enumerate(pts):
        xn = (TARGET["x16"] * (x - x0) + TARGET["x0"] * (x16 - x)) / (x16 - x0)
        yn = (TARGET["y33"] * (y - y27) + TARGET["y27"] * (y33 - y)) / (y33 - y27)
        if 17 <= i <= 26 or 36 <= i <= 47:
            yn += 50
        elif 48 <= i <= 67:
            yn -= 70
        out.append((xn, yn))
    return out


def draw_lines(pts: list[tuple[float, float]], thickness: int = 7) -> np.ndarray:
    """Each part's segments drawn one ``cv2.line`` call at a time on a 250x250 canvas."""
    img = np.zeros((CROP, CROP), np.uint8)
    for a, b, closed in PARTS:
        idx = list(range(a, b + 1)) + ([a] if closed else [])
        for i, j in zip(idx[:-1], idx[1:]):
            p = (int(round(pts[i][0])), int(round(pts[i][1])))
            q = (int(round(pts[j][0])), int(round(pts[j][1])))
            cv2.line(img, p, q, 255, thickness)
    return img


def png_roundtrip(img: np.ndarray) -> np.ndarray:
    """Write the sketch as PNG and read it back, as the paper's pipeline did."""
    fd, path = tempfile.mkstemp(suffix=".png")
    os.close(fd)
    try:
        cv2.imwrite(path, img)
        return cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    finally:
        os.unlink(path)


def model_input(sketch: np.ndarray, size: int) -> np.ndarray:
    """Resize the 250x250 sketch to the network's input, scale to [0, 1], add batch/channel."""
    small = cv2.resize(sketch, (size, size), interpolation=cv2.INTER_AREA)
    return (small.astype(np.float32) / 255.0)[None, :, :, None]


def image_to_sketch(grey: np.ndarray, cascade, predictor) -> list[np.ndarray]:
    """Every face in a grey image to its 250x250 sketch (the paper's 3.1 s path)."""
    out = []
    for box in detect_full(grey, cascade):
        pts = remap_loop(landmarks(grey, box, predictor))
        out.append(png_roundtrip(draw_lines(pts)))
    return out
