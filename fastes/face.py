"""Face front end: detect faces, cut 250x250 grey crops, place dlib's 68 landmarks.

Detection (:mod:`fastes.detect`) runs on a small copy of the image, BlazeFace by default
or the paper's Haar cascade; each face's square crop is cut from the full-resolution grey
image and resized to 250x250, and dlib's 68-point model places landmarks on it (run by
:mod:`fastes.landmarks`, a Numba twin of ``dlib.shape_predictor``: same points, faster). For BlazeFace the crop
is placed from the eye keypoints so that it frames the face as the Haar path does (dlib
is sensitive to that framing; see ``BLAZE_TO_CROP``). A face rolled in the image plane
(the detector's ``Detections.rolls``) is cut from its box turned by the roll, so that
dlib always sees it upright (``Faces.rolls``; see :class:`FaceFinder`).

The detector and the 68-point predictor are loaded once per process and shared.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .detect import FAST_PASS, Detections, HaarDetector, box_iou, make_detector, warp_patch
from .io import as_uint8, to_grey
from .landmarks import load_predictor, predictor_path

__all__ = ["FaceFinder", "Faces", "CROP", "CROP_MODES", "DEFAULT_CROP", "DEFAULT_DETECTOR", "predictor_path",
           "crop_boxes", "landmark_boxes", "square_boxes", "whole_image_box"]

CROP = 250  # face crops are resized to this square before landmarking (the paper's size)


@dataclass(frozen=True)
class Faces:
    """Faces found in one image, ordered left to right.

    ``boxes``: int32 ``(K, 4)`` x, y, w, h in the original image: the square crop each
    face's landmarks were placed in (the Haar box itself on the Haar path).
    ``landmarks``: float32 ``(K, 68, 2)`` in 250x250 crop coordinates (the input of
    :func:`fastes.sketch`). ``thumbs``: float32 ``(K, 24, 24)`` normalized thumbnails of
    the crops, which video tracking compares frame to frame. ``rolls``: float32 ``(K,)``
    degrees each crop was turned by (clockwise as seen) to cut a rolled face upright, its
    box turned about its centre (``None`` or 0: axis-aligned).
    """

    boxes: np.ndarray
    landmarks: np.ndarray
    thumbs: np.ndarray | None = None
    rolls: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def image_landmarks(self) -> np.ndarray:
        """Landmarks in original image coordinates, float32 ``(K, 68, 2)``."""
        b = self.boxes.astype(np.float32)
        scale = b[:, None, 2:4] / CROP
        if self.rolls is None or not np.any(self.rolls):
            return (self.landmarks * scale + b[:, None, 0:2]).astype(np.float32)
        a = np.radians(self.rolls.astype(np.float64))[:, None]
        d = (self.landmarks - CROP / 2) * scale  # from the crop's centre, turned back by the roll
        x, y = np.cos(a) * d[..., 0] - np.sin(a) * d[..., 1], np.sin(a) * d[..., 0] + np.cos(a) * d[..., 1]
        return (np.stack([x, y], -1) + b[:, None, 0:2] + b[:, None, 2:4] / 2).astype(np.float32)


# BlazeFace box -> the square crop dlib's 68-point predictor expects. dlib is sensitive to
# how the box frames the face (the raw BlazeFace box gives landmarks 9 % of the
# inter-ocular distance away from the Haar path's). The crop is placed from the two eye
# keypoints: centre = eye midpoint + (dx, dy) * box width, side = k * box width. The three
# numbers are medians fitted on the posed sets of ../shared/data against the crop that
# the Haar path's landmarks imply (tools/make/calibrate_blazeface.py; mean landmark error
# vs the Haar path 2.29 % of the inter-ocular distance on held-out subjects).
BLAZE_TO_CROP = (0.004, 0.107, 1.067)

# The crop a face's own landmarks imply (for tracking between detections in video):
# centre = landmark mean + (cx, cy) * jaw width (points 0-16), side = k * jaw width.
# Medians of the Haar path's boxes over the posed sets (tools/make/calibrate_blazeface.py
# prints them), so a tracked crop frames the face as a detection does.
LANDMARKS_TO_CROP = (0.001, -0.144, 1.142)

DEFAULT_DETECTOR = "blazeface"

# Crop mode: when the input itself is one tight face crop (FER+'s 48-px faces, users'
# crop datasets), the whole image can serve as the face box. "auto": only when the
# detector finds nothing in an image whose long side is at most CROP_AUTO_MAX px;
# "always": never run the detector, the whole image is the face; "never": detector only.
# The whole-image box is the centred square of the long side (edges replicated), so a
# non-square crop keeps its aspect ratio. Detection rates per mode: docs/accuracy.md.
CROP_MODES = ("auto", "always", "never")
DEFAULT_CROP = "auto"
CROP_AUTO_MAX = 128
# ... and whose short side is at least this: a 1x1 or 4x4 image is no face crop (a 1x1
# image was labelled "positive" at 0.78). No image of the shared sets is smaller (not in
# the tag, which keys caches).
CROP_AUTO_MIN = 16


def whole_image_box(shape: tuple) -> np.ndarray:
    """The crop-mode face box of an image of ``shape``: int32 ``(1, 4)``, the centred
    square of the long side."""
    h, w = shape[:2]
    side = max(h, w)
    return np.array([[(w - side) // 2, (h - side) // 2, side, side]], np.int32)


def square_boxes(centres: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """x, y, w, h boxes (float ``(K, 4)``) of squares given their centres ``(K, 2)`` and sides ``(K,)``."""
    return np.concatenate([centres - sides[:, None] / 2, np.stack([sides, sides], 1)], 1)


def crop_boxes(det: Detections) -> np.ndarray:
    """Square crop boxes (float ``(K, 4)`` x, y, w, h) to place landmarks in: Haar's own
    boxes (the paper), or boxes calibrated from BlazeFace's eye keypoints."""
    if det.keypoints is None:
        return det.boxes
    dx, dy, k = BLAZE_TO_CROP
    w = det.boxes[:, 2]
    off = np.stack([dx * w, dy * w], 1)
    rolls = getattr(det, "rolls", None)
    if rolls is not None and np.any(rolls):  # a rolled face: the offset from the eyes turns with it
        a = np.radians(rolls)
        ca, sa = np.cos(a), np.sin(a)
        off = np.stack([ca * off[:, 0] - sa * off[:, 1], sa * off[:, 0] + ca * off[:, 1]], 1)
    c = (det.keypoints[:, 0] + det.keypoints[:, 1]) / 2 + off
    return square_boxes(c, k * w)


def landmark_boxes(image_landmarks: np.ndarray) -> np.ndarray:
    """Square crop boxes (float ``(K, 4)``) implied by landmarks in image coordinates."""
    cx, cy, k = LANDMARKS_TO_CROP
    jaw = np.linalg.norm(image_landmarks[:, 0] - image_landmarks[:, 16], axis=1)
    c = image_landmarks.mean(1) + np.stack([cx * jaw, cy * jaw], 1)
    return square_boxes(c, k * jaw)


THUMB = 24

# A rolled face within this many degrees of a quarter or half turn is cut turned by exactly
# that turn (see FaceFinder.__call__): the crop of a sideways photo is then the upright
# photo's crop turned, and gets its label (London samples turned 90/180/270).
ROLL_SNAP = 12.0


def _thumbs(crops: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm 24x24 thumbnails of 250x250 crops: their dot product is the
    normalized cross-correlation of the two faces' appearance."""
    out = np.empty((len(crops), THUMB, THUMB), np.float32)
    for k, c in enumerate(crops):
        t = cv2.resize(c, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
        t -= t.mean()
        out[k] = t / max(float(np.linalg.norm(t)), 1e-6)
    return out


# Tracking is lost when a face's thumbnail correlates less than this with the previous
# frame's. On a synthetic clip of a face moving ~5 % of its width per frame, consecutive
# crops correlate at 0.82 (median; 5th percentile 0.59); a crop of the background
# the face left correlates near 0. A low value only costs an early re-detection.
MIN_TRACK_NCC = 0.6


class FaceFinder:
    """Detect faces and place 68 landmarks on each (detector + dlib).

    >>> finder = FaceFinder()
    >>> faces = finder(image)          # a numpy image (BGR, grey, RGBA, 16-bit)
    >>> fastes.sketch(faces.landmarks)  # (K, 250, 250) sketches

    ``detector``: ``"blazeface"`` (default: MediaPipe's short-range model on LiteRT),
    ``"blazeface-full"`` (its full-range model, for smaller faces), ``"blazeface-group"``
    (full range plus a 2x2 tile search, for group photos), ``"haar"`` (the
    paper's cascade, on a small grey copy) or a detector object. ``detect_size`` and
    ``fine_pass`` configure Haar (see :class:`fastes.detect.HaarDetector`). ``crop``: one of
    ``CROP_MODES``, when the whole image is taken as the face box (see ``CROP_MODES``).

    Rolled faces: a face the detector reports rolled is cut turned upright, levelled by
    its landmarks' eyes; one within ``ROLL_SNAP`` of a quarter or half turn (a sideways
    photo) is found again in the image turned back, so it gets the landmarks the
    upright photo gets. Upright faces take none of these steps.
    """

    def __init__(self, detector=DEFAULT_DETECTOR, detect_size: int = FAST_PASS.size, fine_pass: bool = True,
                 crop: str = DEFAULT_CROP):
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {', '.join(CROP_MODES)}, got {crop!r}")
        self.detector = make_detector(detector, detect_size, fine_pass) if isinstance(detector, str) else detector
        self.crop = crop
        self._predictor = load_predictor()

    def __reduce__(self):  # picklable: a worker process rebuilds the detector, loads the model once
        return FaceFinder, (self.detector, FAST_PASS.size, True, self.crop)

    @property
    def tag(self) -> str:
        """The front end's settings, for caches keyed by them."""
        crop = {"never": "", "always": "|crop=always", "auto": f"|crop=auto{CROP_AUTO_MAX}"}[self.crop]
        if isinstance(self.detector, HaarDetector):
            return self.detector.tag + crop  # unchanged since the first landmark caches (crop never)
        return f"{self.detector.tag}|{BLAZE_TO_CROP}" + crop

    # -- stages ---------------------------------------------------------------------
    def detect(self, image: np.ndarray, order: str = "bgr") -> np.ndarray:
        """Crop boxes (int32 ``(K, 4)``: x, y, w, h, full resolution), left to right; the
        whole image as one box where the crop mode says so. (A rolled face's box is to be
        cut turned by its roll: calling the finder itself does that.)"""
        return self._detect(image, order)[0]

    def _detect(self, image: np.ndarray, order: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`detect`'s boxes and each face's roll (degrees its crop must undo)."""
        if self.crop == "always":
            return whole_image_box(image.shape), np.zeros(1, np.float32)
        det = self.detector(image, order)
        boxes = np.round(crop_boxes(det)).astype(np.int32)
        if (self.crop == "auto" and not (boxes[:, 2] >= 2).any()
                and CROP_AUTO_MIN <= min(image.shape[:2]) and max(image.shape[:2]) <= CROP_AUTO_MAX):
            return whole_image_box(image.shape), np.zeros(1, np.float32)
        rolls = getattr(det, "rolls", None)
        rolls = np.zeros(len(boxes), np.float32) if rolls is None else np.asarray(rolls, np.float32)
        ok = boxes[:, 2] >= 2
        boxes, rolls = boxes[ok], rolls[ok]
        left_to_right = np.argsort(boxes[:, 0], kind="stable")
        return boxes[left_to_right], rolls[left_to_right]

    def crops(self, image: np.ndarray, boxes: np.ndarray, order: str = "bgr",
              rolls: np.ndarray | None = None) -> np.ndarray:
        """Cut each box from the full-resolution image, grey, resized to 250x250.

        Only the boxes are converted to grey (cheaper than the whole frame: 0.15 ms for
        640x480 on one core; the conversion is per pixel, so the crops are the same).
        Boxes that reach past the image edge are filled by replicating the edge, so a
        face at the border keeps its scale. Returns uint8 ``(K, 250, 250)``. A face with a
        nonzero roll (``rolls``, degrees) is cut from its box turned by the roll about the
        box's centre, so that it is upright in the crop.
        """
        out = np.empty((len(boxes), CROP, CROP), dtype=np.uint8)
        h, w = image.shape[:2]
        for k, (x, y, bw, bh) in enumerate(boxes):
            if rolls is not None and rolls[k]:
                out[k] = to_grey(warp_patch(image, (x + bw / 2, y + bh / 2), float(bw), float(rolls[k]), CROP), order)
                continue
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
            crop = to_grey(image[y0:y1, x0:x1], order)
            if (x0, y0, x1, y1) != (x, y, x + bw, y + bh):
                crop = cv2.copyMakeBorder(
                    crop, y0 - y, y + bh - y1, x0 - x, x + bw - x1, cv2.BORDER_REPLICATE
                )
            interp = cv2.INTER_AREA if bw > CROP else cv2.INTER_LINEAR
            out[k] = cv2.resize(crop, (CROP, CROP), interpolation=interp)
        return out

    def landmarks(self, crops: np.ndarray) -> np.ndarray:
        """dlib's 68 landmarks per 250x250 crop (whole pixels), float32 ``(K, 68, 2)``."""
        return self._predictor(crops)

    def track(self, image: np.ndarray, previous: Faces, order: str = "bgr", min_iou: float = 0.9) -> Faces | None:
        """Landmarks for the faces of ``previous`` (the last frame's result) without
        running the detector: each face is re-landmarked in the crop its previous
        landmarks imply, and again in the crop the new landmarks imply while the two
        overlap by less than ``min_iou`` (the face moved). Returns ``None`` when
        tracking is not trustworthy — no face to track, or no agreement after three
        passes, or a crop that no longer looks like the previous frame's (thumbnail
        correlation below ``MIN_TRACK_NCC``: the face left) — and the caller should
        detect again. Faces that enter the frame are found only at
        the next detection."""
        if len(previous) == 0 or (previous.rolls is not None and np.any(previous.rolls)):
            return None  # (a rolled face is found again by the detector, which turns it upright)
        image = as_uint8(image, order)
        boxes = np.round(landmark_boxes(previous.image_landmarks())).astype(np.int32)
        for _ in range(3):  # re-centre on the face as it moved: usually one extra pass
            if (boxes[:, 2] < 8).any():
                return None
            crops = self.crops(image, boxes, order)
            found = Faces(boxes, self.landmarks(crops), _thumbs(crops))
            implied = landmark_boxes(found.image_landmarks())
            if (box_iou(boxes, implied) >= min_iou).all():
                if previous.thumbs is not None:
                    ncc = (found.thumbs * previous.thumbs).sum(axis=(1, 2))
                    if (ncc < MIN_TRACK_NCC).any():
                        return None  # the face is gone from where it was
                return found
            boxes = np.round(implied).astype(np.int32)
        return None

    # -- all together ---------------------------------------------------------------
    def __call__(self, image: np.ndarray, order: str = "bgr", thumbs: bool = False) -> Faces:
        """Find the faces in an image array (see :func:`fastes.io.to_grey` for what it takes).
        ``thumbs=True`` also keeps the crops' thumbnails, which :meth:`track` compares to
        tell when a face has left (video); single images do not need them."""
        image = as_uint8(image, order)  # validated and converted once
        # Haar searches the whole frame grey: convert it once, for detection and crops alike
        src = to_grey(image, order) if isinstance(self.detector, HaarDetector) else image
        return self._find(src, order, thumbs, quarters=True)

    def _find(self, src: np.ndarray, order: str, thumbs: bool, quarters: bool) -> Faces:
        boxes, rolls = self._detect(src, order)
        if len(boxes) == 0:
            return Faces(boxes, np.zeros((0, 68, 2), dtype=np.float32),
                         np.zeros((0, THUMB, THUMB), np.float32) if thumbs else None, rolls)
        crops = self.crops(src, boxes, order, rolls)
        lms = self.landmarks(crops)
        turned = np.flatnonzero(rolls)
        if len(turned):  # level the rolled faces by their own eyes (the keypoints' roll is within ~10 degrees)
            eyes = lms[turned, 42:48].mean(1) - lms[turned, 36:42].mean(1)
            rolls = rolls.copy()
            level = rolls[turned] + np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))
            # a photo turned by a quarter or a half turn (the common case: a camera held sideways)
            quarter = (np.round(level / 90) * 90 + 180) % 360 - 180  # -180, -90 or 90 (0: not turned)
            snap = quarters & (quarter != 0) & (np.abs((level - quarter + 180) % 360 - 180) <= ROLL_SNAP)
            rolls[turned] = np.where(snap, quarter, level).astype(np.float32)
            crops[turned] = self.crops(src, boxes[turned], order, rolls[turned])
            lms[turned] = self.landmarks(crops[turned])
            for q in np.unique(quarter[snap]):
                self._quarter_turn(src, order, float(q), turned[snap & (quarter == q)], boxes, crops, lms)
        return Faces(boxes, lms, _thumbs(crops) if thumbs else None, rolls)

    def _quarter_turn(self, src, order, q, faces, boxes, crops, lms) -> None:
        """Faces ``faces`` are turned by ``q`` (-180, -90 or 90 degrees): find them again
        in the image turned back (exact pixels), on the upright path, and take those
        crops and landmarks, boxes mapped back (in place). The crop of a sideways photo
        is then the upright photo's crop turned, and gets its landmarks and label; a face
        not found again keeps its levelled cut."""
        code = {90.0: cv2.ROTATE_90_COUNTERCLOCKWISE, -90.0: cv2.ROTATE_90_CLOCKWISE, -180.0: cv2.ROTATE_180}[q]
        t = cv2.rotate(src, code)
        tb, tr = self._detect(t, order)
        tb = tb[tr == 0]
        if len(tb) == 0:
            return
        h, w = src.shape[:2]
        x, y, side = tb[:, 0], tb[:, 1], tb[:, 2]
        back = {90.0: (w - y - side, x), -90.0: (y, h - x - side), -180.0: (w - x - side, h - y - side)}[q]
        tboxes = np.stack([*back, side, tb[:, 3]], 1).astype(np.int32)
        centres = tboxes[:, :2] + tboxes[:, 2:] / 2
        for k in faces:
            d = np.linalg.norm(centres - (boxes[k, :2] + boxes[k, 2:] / 2), axis=1)
            j = int(np.argmin(d))
            if d[j] < 0.3 * boxes[k, 2]:
                boxes[k] = tboxes[j]
                crops[k] = self.crops(t, tb[j:j + 1], order)[0]
                lms[k] = self.landmarks(crops[k:k + 1])[0]
