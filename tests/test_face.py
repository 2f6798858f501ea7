"""Face front end: detection (BlazeFace or Haar), crops, dlib landmarks; any input layout."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import fastes
from fastes.face import CROP, FaceFinder, predictor_path
from fastes.io import to_grey


def test_predictor_ships_with_the_install():
    p = predictor_path()
    assert p.is_file() and p.stat().st_size > 50_000_000


@pytest.fixture(scope="module", params=["blazeface", "haar"])
def any_finder(request):
    return FaceFinder(request.param)


def test_bundled_samples_have_one_face_each(any_finder, sample_paths):
    finder = any_finder
    for p in sample_paths:
        faces = finder(fastes.read_image(p))
        assert len(faces) == 1, p
        x, y, w, h = faces.boxes[0]
        assert w > 150 and h > 150  # a portrait: the face is large
        assert faces.landmarks.shape == (1, 68, 2) and faces.landmarks.dtype == np.float32
        lm = faces.image_landmarks()[0]
        # eyes above the mouth, left eye left of the right one, all near the box
        assert lm[36:42, 1].mean() < lm[48:60, 1].mean()
        assert lm[36:42, 0].mean() < lm[42:48, 0].mean()
        assert (lm[:, 0] > x - 0.2 * w).all() and (lm[:, 0] < x + 1.2 * w).all()


def test_any_layout_gives_the_same_faces(any_finder, sample_paths):
    finder = any_finder
    bgr = fastes.read_image(sample_paths[0])
    base = finder(bgr)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    variants = [
        (grey, "bgr"),
        (bgr[:, :, ::-1].copy(), "rgb"),
        (np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]), "bgr"),
        (bgr.astype(np.uint16) * 257, "bgr"),
    ]
    for img, order in variants:
        got = finder(img, order=order)
        if img.ndim == 2 and finder.detector.name != "haar":
            # BlazeFace sees colour: a grey copy moves its box a little, not the face
            np.testing.assert_allclose(got.boxes, base.boxes, atol=0.05 * base.boxes[0, 2])
            continue
        np.testing.assert_array_equal(got.boxes, base.boxes)
        np.testing.assert_allclose(got.landmarks, base.landmarks, atol=1.0)


def test_no_face_is_an_empty_result(any_finder):
    finder = any_finder
    rng = np.random.default_rng(1)
    for img in (np.zeros((480, 640), np.uint8), rng.integers(0, 256, (300, 300), dtype=np.uint8)):
        faces = finder(img)
        assert len(faces) == 0
        assert faces.boxes.shape == (0, 4) and faces.landmarks.shape == (0, 68, 2)
        assert fastes.sketch(faces.landmarks).shape == (0, 250, 250)


def test_several_faces_left_to_right(any_finder, sample_paths):
    finder = any_finder
    a = cv2.resize(fastes.read_image(sample_paths[0]), (300, 300))
    b = cv2.resize(fastes.read_image(sample_paths[1]), (300, 300))
    group = np.hstack([a, b, a])
    faces = finder(group)
    assert len(faces) == 3
    assert (np.diff(faces.boxes[:, 0]) > 0).all()
    assert faces.boxes[0, 0] < 300 <= faces.boxes[1, 0] < 600 <= faces.boxes[2, 0]


def test_large_image_is_searched_downscaled(any_finder, sample_paths):
    finder = any_finder
    img = cv2.resize(fastes.read_image(sample_paths[2]), (2400, 2400))
    faces = finder(img)
    assert len(faces) == 1
    assert faces.boxes[0, 2] > 600  # box in full-resolution coordinates


def test_tight_crops_are_found_by_the_fine_pass(faces_dir, manifest):
    """In-the-wild crops fill the frame; the padded second pass finds most of them."""
    wild = [r for r in manifest if r["dataset"] == "wild"][:60]
    fast_only, both = FaceFinder("haar", fine_pass=False), FaceFinder("haar")
    n_fast = sum(len(fast_only(fastes.read_image(faces_dir / r["path"]))) > 0 for r in wild)
    n_both = sum(len(both(fastes.read_image(faces_dir / r["path"]))) > 0 for r in wild)
    assert n_both > n_fast
    assert n_both >= 0.85 * len(wild)


def test_crops_handle_boxes_past_the_edge(finder):
    grey = np.tile(np.arange(100, dtype=np.uint8), (80, 1))
    crops = finder.crops(grey, np.array([[-20, -10, 60, 60], [70, 50, 60, 60]]))
    assert crops.shape == (2, CROP, CROP)
    # replicated edge: the first crop's left part repeats column 0
    assert crops[0, :, 0].max() == 0


def test_crops_from_colour_equal_crops_from_the_grey_frame(finder):
    """Crops convert only their box to grey: the same pixels as cutting from a grey
    frame, inside the image and past its edges, for BGR, RGB and BGRA."""
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 256, (90, 120, 4), dtype=np.uint8), (0, 0), 2)
    boxes = np.array([[-20, -10, 60, 60], [70, 50, 60, 60], [10, 10, 300, 300], [30, 20, 40, 40]])
    for order, im in [("bgr", img[..., :3]), ("rgb", img[..., :3]), ("bgr", img)]:
        np.testing.assert_array_equal(finder.crops(im, boxes, order), finder.crops(to_grey(im, order), boxes))


def test_bad_parameters():
    with pytest.raises(ValueError):
        FaceFinder("haar", detect_size=10)
    with pytest.raises(ValueError, match="unknown detector"):
        FaceFinder("retinaface")
    with pytest.raises(fastes.ImageError):
        FaceFinder()(np.zeros((4, 4, 2), np.uint8))


def test_tracking_notices_a_face_that_left(sample_paths):
    """Single images skip the crops' thumbnails; video detection frames keep them
    (thumbs=True) for track(), which follows a face that stays and gives up on one
    that left."""
    from fastes.testing import frame_with_face

    finder = FaceFinder()
    frame = frame_with_face(fastes.read_image(sample_paths[0]))
    assert finder(frame).thumbs is None
    first = finder(frame, thumbs=True)
    assert first.thumbs.shape == (1, 24, 24)
    still = finder.track(frame, first)
    assert still is not None and len(still) == 1
    empty = np.full_like(frame, 120)
    empty[::7] = 90  # a little texture, no face
    assert finder.track(empty, first) is None


# -- crop mode: the whole image as the face box ------------------------------------------
def _tight_crop(finder, path, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``-px grey crop of the face's own crop box, and the landmarks the detection
    path placed in that box (250x250 crop coordinates)."""
    img = fastes.read_image(path)
    faces = finder(img)
    crop = finder.crops(img, faces.boxes[:1])[0]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA), faces.landmarks[0]


def test_crop_modes_and_their_rules():
    assert fastes.face.CROP_MODES == ("auto", "always", "never")
    blank_small, blank_large = np.full((64, 64), 128, np.uint8), np.full((400, 400), 128, np.uint8)
    assert len(FaceFinder(crop="never")(blank_small)) == 0
    auto = FaceFinder(crop="auto")
    got = auto(blank_small)  # nothing detected, small: the whole image is the face
    assert got.boxes.tolist() == [[0, 0, 64, 64]] and got.landmarks.shape == (1, 68, 2)
    assert len(auto(blank_large)) == 0  # a large image is never taken as one face
    # always: no detector; a non-square image keeps its aspect (centred square, long side)
    assert FaceFinder(crop="always").detect(np.zeros((60, 40), np.uint8)).tolist() == [[-10, 0, 60, 60]]
    with pytest.raises(ValueError, match="crop must be one of"):
        FaceFinder(crop="whole")


def test_crop_mode_is_part_of_the_cache_key_and_survives_pickling():
    import pickle

    tags = {FaceFinder(crop=c).tag for c in fastes.face.CROP_MODES}
    assert len(tags) == 3
    assert FaceFinder("haar", crop="never").tag == FaceFinder("haar", crop="never").detector.tag  # old caches
    again = pickle.loads(pickle.dumps(FaceFinder("haar", crop="always")))
    assert again.crop == "always" and again.tag == FaceFinder("haar", crop="always").tag


def test_crop_mode_landmarks_match_the_detection_path(finder, sample_paths):
    """A 48-px tight crop taken whole: landmarks close to those the detector's box gave."""
    always = FaceFinder(crop="always")
    for p in sample_paths[:3]:
        small, ref = _tight_crop(finder, p)
        got = always(small)
        assert len(got) == 1
        iod = np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))
        assert np.linalg.norm(got.landmarks[0] - ref, axis=1).mean() < 0.15 * iod


def test_pipeline_takes_a_crop_mode_finder(finder, sample_paths):
    small, _ = _tight_crop(finder, sample_paths[0])
    pipe = fastes.Pipeline(detector=FaceFinder(crop="always"))
    faces = pipe.run(small)
    assert len(faces) == 1 and faces[0].probs.shape == (4,) and faces[0].box == (0, 0, 48, 48)
