"""The Numba shape predictor against dlib itself, its file reader and its cache."""
from __future__ import annotations

import numpy as np
import pytest

from fastes.landmarks import ModelFormatError, _cache_file, _parse, load_predictor, predictor_path

dlib = pytest.importorskip("dlib")


def dlib_points(crops: np.ndarray) -> np.ndarray:
    sp = dlib.shape_predictor(str(predictor_path()))
    out = []
    for c in crops:
        rect = dlib.rectangle(0, 0, c.shape[1] - 1, c.shape[0] - 1)
        out.append([(p.x, p.y) for p in sp(c, rect).parts()])
    return np.asarray(out, np.float32)


def crops_of(finder, images) -> np.ndarray:
    from fastes.io import to_grey

    out = []
    for im in images:
        boxes = finder.detect(im)
        if len(boxes):
            out.append(finder.crops(to_grey(im), boxes))
    return np.concatenate(out)


def test_same_points_as_dlib_on_the_bundled_faces(finder, sample_paths):
    from fastes import read_image

    crops = crops_of(finder, [read_image(p) for p in sample_paths])
    pred = load_predictor()(crops)
    assert pred.shape == (len(crops), 68, 2) and pred.dtype == np.float32
    np.testing.assert_array_equal(pred, dlib_points(crops))


def test_same_points_as_dlib_on_shared_data(finder, faces_dir, manifest):
    """Every dataset, 8 images each, plus awkward crops: shifted, scaled, noisy, flat."""
    from fastes import read_image

    rng = np.random.default_rng(1)
    by_set: dict[str, list[dict]] = {}
    for row in manifest:
        by_set.setdefault(row["dataset"], []).append(row)
    images = [read_image(faces_dir / rows[i]["path"]) for rows in by_set.values()
              for i in rng.choice(len(rows), min(8, len(rows)), replace=False)]
    crops = crops_of(finder, images)
    odd = [np.roll(crops[0], 60, axis=1), crops[1][::2, ::2].repeat(2, 0).repeat(2, 1),
           rng.integers(0, 256, crops[0].shape, dtype=np.uint8), np.full_like(crops[0], 128)]
    crops = np.concatenate([crops, np.asarray(odd)])
    np.testing.assert_array_equal(load_predictor()(crops), dlib_points(crops))


def test_crop_size_other_than_250(finder, sample_paths):
    import cv2

    from fastes import read_image

    crop = crops_of(finder, [read_image(sample_paths[0])])[0]
    small = cv2.resize(crop, (151, 120))
    np.testing.assert_array_equal(load_predictor()(small)[0], dlib_points(small[None])[0])


def test_bad_crops_raise():
    pred = load_predictor()
    with pytest.raises(ValueError, match="uint8"):
        pred(np.zeros((1, 250, 250), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        pred(np.zeros((1, 2, 250, 250), np.uint8))
    assert pred(np.zeros((0, 250, 250), np.uint8)).shape == (0, 68, 2)


def test_truncated_or_foreign_files_are_refused(tmp_path):
    whole = predictor_path().read_bytes()
    for name, data in (("truncated.dat", whole[: len(whole) // 2]), ("trailing.dat", whole + b"\x01\x00"),
                       ("text.dat", b"not a model at all"), ("empty.dat", b"")):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(ModelFormatError, match=name):
            _parse(p)


def test_parsed_model_is_cached_and_a_broken_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTES_CACHE", str(tmp_path))
    cache = _cache_file(predictor_path())
    assert cache.parent == tmp_path and not cache.exists()
    load_predictor.cache_clear()
    try:
        first = load_predictor()
        assert cache.is_file()
        cache.write_bytes(b"garbage")
        load_predictor.cache_clear()
        again = load_predictor()  # parses again, rewrites the cache
        np.testing.assert_array_equal(first.leaves[0, 0], again.leaves[0, 0])
        with np.load(cache) as z:
            assert z["leaves"].shape == first.leaves.shape
    finally:
        load_predictor.cache_clear()
