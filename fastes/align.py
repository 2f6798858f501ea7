"""Face crops aligned by their own landmarks: the appearance stream of a two-stream model.

The sketch keeps the geometry of brows, eyes and mouth; what landmarks cannot see
(wrinkles, teeth, furrows) is in the pixels. Each face's grey crop is cut with the
similarity transform (rotation, one scale, shift) that puts its two eye centres and its
mouth centre where :data:`CANON` says, in a ``size`` x ``size`` frame, so every crop
shows the same parts in the same places whatever the face's size, roll or position.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["CANON", "similarity", "align_matrices", "aligned_crops", "aligned_crops_reference", "face_input"]

# Left eye centre, right eye centre, mouth centre as fractions of the frame (x, y): eyes
# 0.4 of the frame apart at 0.36 of its height, the mouth ~1.05 eye distances below them.
CANON = np.array([[0.30, 0.36], [0.70, 0.36], [0.50, 0.78]], np.float64)


def _anchors(landmarks: np.ndarray) -> np.ndarray:
    """(K, 3, 2): the two eye centres (points 36-41, 42-47) and the outer mouth's centre (48-59)."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 68, 2)
    return np.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 48:60].mean(1)], 1)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform mapping points ``src`` onto ``dst`` (N, 2) in the
    least-squares sense (Umeyama 1991, without reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    var = (s ** 2).sum() / len(src)
    if not var > 0:
        raise ValueError("degenerate points: they all coincide")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    scale = (sig * np.diag(e)).sum() / var
    m = np.empty((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = md - m[:, :2] @ ms
    return m


def align_matrices(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(K, 2, 3): for each face (image-coordinate landmarks), the transform from the image
    to its aligned ``size`` x ``size`` frame."""
    dst = CANON * size
    return np.stack([similarity(a, dst) for a in _anchors(landmarks)]) if len(landmarks) else np.zeros((0, 2, 3))


def aligned_crops(grey: np.ndarray, landmarks: np.ndarray, size: int = 48) -> np.ndarray:
    """uint8 (K, size, size) aligned crops of a 2-D uint8 image, from its faces'
    image-coordinate landmarks (K, 68, 2). Large faces are first area-averaged down (a
    plain warp of a 400-px face to 48 px would alias); pixels outside the image are the
    nearest edge pixel's."""
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got {grey.dtype} {grey.shape}")
    out = np.empty((len(landmarks), size, size), np.uint8)
    for k, m in enumerate(align_matrices(landmarks, size)):
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # output px per image px
        img, mk = grey, m
        if scale < 0.5:  # shrink the face's region first so the warp samples ~1-2 px per output px
            h, w = grey.shape
            inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
            corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
            x0, y0 = np.clip(np.floor(corners.min(0)) - 2, 0, [w - 1, h - 1]).astype(int)
            x1, y1 = np.clip(np.ceil(corners.max(0)) + 2, [x0 + 1, y0 + 1], [w, h]).astype(int)
            roi = grey[y0:y1, x0:x1]
            f = 2 * scale
            img = cv2.resize(roi, (max(1, round(roi.shape[1] * f)), max(1, round(roi.shape[0] * f))),
                             interpolation=cv2.INTER_AREA)
            fx, fy = img.shape[1] / roi.shape[1], img.shape[0] / roi.shape[0]
            mk = m @ np.array([[1 / fx, 0, x0], [0, 1 / fy, y0], [0, 0, 1]], np.float64)
        out[k] = cv2.warpAffine(img, mk, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


def aligned_crops_reference(grey: np.ndarray, landmarks: np.ndarray, size: int = 48) -> np.ndarray:
    """Plain NumPy twin of :func:`aligned_crops` without the pre-shrink (bilinear sampling
    of the inverse transform, edge pixels repeated): the tests' reference."""
    h, w = grey.shape
    out = np.empty((len(landmarks), size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for k, m in enumerate(align_matrices(landmarks, size)):
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        sx = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
        sy = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
        x0, y0 = np.floor(sx), np.floor(sy)
        fx, fy = sx - x0, sy - y0
        g = grey.astype(np.float64)

        def px(yv, xv):
            return g[np.clip(yv, 0, h - 1).astype(int), np.clip(xv, 0, w - 1).astype(int)]

        v = ((1 - fx) * (1 - fy) * px(y0, x0) + fx * (1 - fy) * px(y0, x0 + 1)
             + (1 - fx) * fy * px(y0 + 1, x0) + fx * fy * px(y0 + 1, x0 + 1))
        out[k] = np.clip(np.round(v), 0, 255).astype(np.uint8)
    return out


def face_input(grey: np.ndarray, image_landmarks: np.ndarray, size: int) -> np.ndarray:
    """A two-stream model's ``face`` input for the faces of one grey image: aligned crops,
    float32 ``(K, size, size, 1)`` in [0, 1]."""
    return (aligned_crops(grey, image_landmarks, size)[..., None] / np.float32(255)).astype(np.float32)
