"""Drawing on the input: boxes, landmarks and labels (annotated images and the live
window). The emotion sketch itself is drawn in :mod:`fastes.sketch`."""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from .io import to_grey

__all__ = ["annotate", "overlay", "gui_available", "WINDOW"]

WINDOW = "fastes (q or Esc to stop)"  # the live window's title


def annotate(image: np.ndarray, faces) -> np.ndarray:
    """A BGR copy of ``image`` with each face's box, 68 points and label."""
    vis = image.copy() if image.ndim == 3 and image.shape[2] == 3 else cv2.cvtColor(to_grey(image), cv2.COLOR_GRAY2BGR)
    if vis.dtype != np.uint8:
        vis = cv2.cvtColor(to_grey(image), cv2.COLOR_GRAY2BGR)
    s = max(1, round(max(vis.shape[:2]) / 500))
    for f in faces:
        x, y, w, h = f.box
        cv2.rectangle(vis, (x, y), (x + w, y + h), (0, 200, 0), s)
        for px, py in np.round(f.landmarks).astype(int):
            cv2.circle(vis, (int(px), int(py)), s, (0, 0, 255), -1)
        cv2.putText(vis, f"{f.label} {f.confidence:.2f}", (x, max(12 * s, y - 4 * s)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5 * s, (0, 255, 255), s, cv2.LINE_AA)
    return vis


def overlay(grey: np.ndarray, faces) -> np.ndarray:
    """The grey input (as the front end saw it) with boxes and the 68 points of
    :class:`fastes.Faces` drawn."""
    vis = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    scale = max(1, round(max(grey.shape) / 500))
    for (x, y, w, h), pts in zip(faces.boxes, faces.image_landmarks()):
        cv2.rectangle(vis, (int(x), int(y)), (int(x + w), int(y + h)), (0, 200, 0), scale)
        for px, py in np.round(pts).astype(int):
            cv2.circle(vis, (int(px), int(py)), scale + 1, (0, 0, 255), -1)
    return vis


def gui_available() -> bool:
    """True when OpenCV can open a window here: a build with highgui (not the headless
    wheel) and, on Linux, a display to open it on."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow(WINDOW)
        return True
    except cv2.error:
        return False
