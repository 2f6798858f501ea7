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


def test_landmark_cache_in_worker_processes_equals_one_process(tmp_path, finder, sample_paths):
    from fastes.face import FaceFinder

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    paths = []
    for i, p in enumerate(sample_paths[:4]):
        shutil.copy(p, imgs / f"{i}.jpg")
        paths.append(imgs / f"{i}.jpg")
    (imgs / "bad.png").write_bytes(b"no image")
    paths.append(imgs / "bad.png")
    serial = LandmarkCache(finder, cache_dir=tmp_path / "a", workers=1).get(paths, progress=False)
    par = LandmarkCache(FaceFinder(), cache_dir=tmp_path / "b", workers=2)
    par.min_parallel = 0  # a pool even for five images
    got = par.get(paths, progress=False)
    for a, b in zip(got, serial):
        np.testing.assert_array_equal(a, b)


def test_landmark_cache_saves_keep_another_writers_entries(tmp_path, finder, sample_paths):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    a, b = imgs / "a.jpg", imgs / "b.jpg"
    shutil.copy(sample_paths[0], a)
    shutil.copy(sample_paths[1], b)
    one = LandmarkCache(finder, cache_dir=tmp_path / "c")
    two = LandmarkCache(finder, cache_dir=tmp_path / "c")  # opened before one saved
    one.get([a], progress=False)
    two.get([b], progress=False)
    f = CountingFinder(finder)
    LandmarkCache(f, cache_dir=tmp_path / "c").get([a, b], progress=False)
    assert f.calls == 0


def test_votes_become_soft_labels(tmp_path):
    from fastes.data import is_majority, soft_label

    header = "path,dataset,subject,emotion,class4,gender,age,ethnicity,setting,votes"
    m = _write_manifest(tmp_path, [
        # neutral 4, sadness 1, anger 3, disgust 2: plurality neutral, yet 6 of 10 negative
        "ferplus/train/a.png,ferplus,f-a,neutral,neutral,,,,in_the_wild,4;0;0;1;3;2;0;0;0;0",
        # happiness 6, contempt 2, unknown 1, not-a-face 1: the last three leave the distribution
        "ferplus/valid/b.png,ferplus,f-b,happiness,positive,,,,in_the_wild,0;6;0;0;0;0;0;2;1;1",
        "ferplus/valid/c.png,ferplus,f-c,surprise,awe,,,,in_the_wild,0;0;5;0;0;0;4;0;1;0",
        "jaffe/d.png,jaffe,j-d,fear,awe,female,,east_asian,posed,",
    ], header=header)
    s = read_manifest(m)
    np.testing.assert_allclose(s[0].target, [0, 0.6, 0, 0.4])  # CLASSES: positive negative awe neutral
    np.testing.assert_allclose(s[1].target, [1, 0, 0, 0])
    np.testing.assert_allclose(s[2].target, [0, 0, 1, 0])  # surprise and fear are both awe
    np.testing.assert_array_equal(s[3].target, np.eye(4)[CLASSES.index("awe")])  # no votes: one-hot
    assert s[3].votes is None and s[0].votes == (4, 0, 0, 1, 3, 2, 0, 0, 0, 0)
    assert [is_majority(x.votes) for x in s] == [False, True, False, False]  # > 5 of 10
    np.testing.assert_array_equal(soft_label((0,) * 10, 2), np.eye(4)[2])  # nothing maps: one-hot


def test_fine_labels_keep_the_seven_emotions_apart(tmp_path):
    """The 7-emotion targets: the votes without contempt/unknown/not-a-face, else one-hot
    on the manifest's emotion, none for an unknown emotion or one of another class; summed
    by EMOTION_CLASS they give the 4-class target."""
    from fastes.data import EMOTION_CLASS, EMOTIONS, fine_label

    header = "path,dataset,subject,emotion,class4,gender,age,ethnicity,setting,votes"
    m = _write_manifest(tmp_path, [
        "ferplus/train/a.png,ferplus,f-a,neutral,neutral,,,,in_the_wild,4;0;0;1;3;2;0;0;0;0",
        "jaffe/b.png,jaffe,j-b,Fear,awe,female,,east_asian,posed,",
        "x/c.png,x,c,contempt,negative,,,,posed,",
        "x/d.png,x,d,happiness,negative,,,,posed,",  # emotion and class4 disagree: no fine label
    ], header=header)
    s = read_manifest(m)
    assert EMOTIONS == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")
    np.testing.assert_allclose(s[0].fine_target, [0.4, 0, 0, 0.1, 0.3, 0.2, 0])
    np.testing.assert_array_equal(s[1].fine_target, np.eye(7)[EMOTIONS.index("fear")])
    assert s[1].emotion == "Fear" and not s[2].fine_target.any() and not s[3].fine_target.any()
    to4 = np.eye(4)[EMOTION_CLASS]  # (7, 4)
    for x in s[:2]:
        np.testing.assert_allclose(x.fine_target @ to4, x.target, atol=1e-6)
    np.testing.assert_array_equal(fine_label(None, "surprise"), np.eye(7)[2])  # no class4 to check
    assert not fine_label((0,) * 7 + (3, 4, 3), "").any()  # only contempt/unknown/not-a-face votes


def test_ferplus_valid_rows_are_told_apart(tmp_path):
    from fastes.data import is_ferplus_valid

    header = "path,dataset,class4,votes"
    m = _write_manifest(tmp_path, ["ferplus/valid/a.png,ferplus,neutral,10;0;0;0;0;0;0;0;0;0",
                                   "ferplus/train/b.png,ferplus,neutral,10;0;0;0;0;0;0;0;0;0",
                                   "wild/valid/c.png,wild,neutral,"], header=header)
    assert [is_ferplus_valid(x) for x in read_manifest(m)] == [True, False, False]


def test_bad_votes_are_a_manifest_error(tmp_path):
    for bad in ("1;2;3", "a;0;0;0;0;0;0;0;0;0", "-1;0;0;0;0;0;0;0;0;11"):
        m = _write_manifest(tmp_path, [f"x.png,neutral,{bad}"], header="path,class4,votes")
        with pytest.raises(ManifestError, match=":2: votes"):
            read_manifest(m)


def test_ferplus_majority_rows_keep_their_label(manifest, faces_dir):
    """On the real FER+ rows: a majority row's soft label peaks at its class4."""
    from fastes.data import is_majority

    rows = [s for s in read_manifest(faces_dir / "manifest.csv") if s.votes is not None][:3000]
    assert rows
    maj = [s for s in rows if is_majority(s.votes)]
    assert 0 < len(maj) < len(rows)
    assert all(int(np.argmax(s.target)) == s.label for s in maj)
    np.testing.assert_allclose([s.target.sum() for s in rows], 1.0, rtol=1e-6)
