"""Data: manifests, the landmark cache, subject-disjoint folds."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from fastes import CLASSES
from fastes.data import LandmarkCache, ManifestError, read_manifest, subject_folds


def _write_manifest(folder, rows, header="path,dataset,subject,emotion,class4,gender,age,ethnicity,setting"):
    (folder / "m.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return folder / "m.csv"


def test_read_manifest_resolves_paths_and_labels(tmp_path):
    m = _write_manifest(tmp_path, ["a/x.jpg,jaffe,s1,happiness,positive,female,,east_asian,posed",
                                   "b/y.png,fei,s2,neutral,neutral,,,,posed"])
    s = read_manifest(m)
    assert [x.label for x in s] == [CLASSES.index("positive"), CLASSES.index("neutral")]
    assert s[0].path == (tmp_path / "a" / "x.jpg").resolve()
    assert s[0].groups == {"dataset": "jaffe", "gender": "female", "age": "", "ethnicity": "east_asian"}
    assert s[1].subject == "s2"


def test_read_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(tmp_path / "none.csv")
    with pytest.raises(ManifestError, match="missing column"):
        read_manifest(_write_manifest(tmp_path, ["a.jpg"], header="path"))
    with pytest.raises(ManifestError, match=":2: class4 'happy'"):
        read_manifest(_write_manifest(tmp_path, ["a.jpg,happy"], header="path,class4"))


def test_subject_folds_are_disjoint_balanced_and_seeded():
    rng = np.random.default_rng(3)
    subjects = np.repeat([f"s{i}" for i in range(60)], rng.integers(1, 12, 60))
    labels = rng.integers(0, 4, len(subjects))
    folds = subject_folds(subjects, labels, k=5, seed=0)
    assert set(folds) == set(range(5))
    for s in np.unique(subjects):
        assert len(set(folds[subjects == s])) == 1  # a person is in one fold only
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 0.25 * len(subjects) / 5 + 12
    for c in range(4):  # each class spread over the folds
        per = np.bincount(folds[labels == c], minlength=5)
        assert per.min() > 0
    np.testing.assert_array_equal(folds, subject_folds(subjects, labels, k=5, seed=0))
    assert not np.array_equal(folds, subject_folds(subjects, labels, k=5, seed=1))


def test_subject_folds_errors():
    with pytest.raises(ValueError, match="subjects cannot fill"):
        subject_folds(["a", "b"], [0, 1], k=5)
    with pytest.raises(ValueError, match="same length"):
        subject_folds(["a"], [0, 1])


def test_subject_folds_on_the_posed_sets(manifest):
    posed = [r for r in manifest if r["setting"] == "posed"]
    subjects = [r["subject"] for r in posed]
    labels = [CLASSES.index(r["class4"]) for r in posed]
    folds = subject_folds(subjects, labels, k=5, seed=0)
    by_subject = {}
    for s, f in zip(subjects, folds):
        by_subject.setdefault(s, set()).add(int(f))
    assert all(len(v) == 1 for v in by_subject.values())
    sizes = np.bincount(folds)
    assert sizes.min() > 0.8 * len(posed) / 5


class CountingFinder:
    """Wraps the real finder, counting calls: a cache hit must not call it."""

    def __init__(self, finder):
        self.finder, self.calls, self.tag = finder, 0, finder.tag

    def __call__(self, image):
        self.calls += 1
        return self.finder(image)


def test_landmark_cache_computes_once_and_keeps_misses(tmp_path, finder, sample_paths):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(sample_paths[0], imgs / "face.jpg")
    shutil.copy(sample_paths[0], imgs / "same-content.jpg")
    (imgs / "noise.png").write_bytes(b"not an image at all")
    paths = [imgs / "face.jpg", imgs / "noise.png", imgs / "same-content.jpg"]
    f = CountingFinder(finder)
    cache = LandmarkCache(f, cache_dir=tmp_path / "cache")
    found, n, boxes, lms = cache.get(paths, progress=False)
    assert found.tolist() == [True, False, True] and n.tolist() == [1, -1, 1]
    assert lms.shape == (3, 68, 2)
    np.testing.assert_array_equal(lms[0], finder(__import__("fastes").read_image(paths[0])).landmarks[0])
    assert f.calls == 1  # same content: one computation; unreadable: no finder call
    # a new cache object reads the file: nothing is recomputed
    f2 = CountingFinder(finder)
    again = LandmarkCache(f2, cache_dir=tmp_path / "cache").get(paths, progress=False)
    assert f2.calls == 0
    for a, b in zip(again, (found, n, boxes, lms)):
        np.testing.assert_array_equal(a, b)
    assert not list((tmp_path / "cache").glob("*.tmp*"))
