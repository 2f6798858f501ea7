"""Cross-dataset protocols: nothing held out is ever trained on; missed faces count wrong."""
from __future__ import annotations

import numpy as np
import pytest

from fastes import CLASSES, protocol
from fastes.train import POSED, FaceSet


def _faceset(seed: int = 0) -> FaceSet:
    """Rows of every posed set, wild, FER+ train and FER+ valid; each face's label is
    written into its first landmark's x (so an oracle learner can read it back)."""
    rng = np.random.default_rng(seed)
    names = [*POSED, "wild", "ferplus", "ferplus"]
    ds, valid, subjects = [], [], []
    for k, name in enumerate(names):
        n = 30
        ds += [name] * n
        valid += [k == len(names) - 1] * n
        subjects += [f"{name}{'v' if k == len(names) - 1 else ''}-{i // 3}" for i in range(n)]
    n = len(ds)
    labels = rng.integers(0, 4, n)
    lms = rng.uniform(50, 200, (n, 68, 2)).astype(np.float32)
    lms[:, 0, 0] = labels
    votes_major = rng.random(n) < 0.7
    groups = {"dataset": np.array(ds), "gender": rng.choice(["female", "male"], n)}
    return FaceSet([f"{d}/{i}.png" for i, d in enumerate(ds)], lms, np.ones(n, bool), labels,
                   np.array(subjects), groups, None, np.array(valid), votes_major & np.array(valid))


class Oracle:
    """Reads the label back from the landmarks; records every row it was trained on."""

    name = "oracle"
    seen: list = []

    def fit(self, data):
        Oracle.seen.append(list(data.paths))

    def predict(self, landmarks):
        return np.eye(4, dtype=np.float32)[landmarks[:, 0, 0].astype(int)]


@pytest.fixture
def oracle():
    Oracle.seen = []
    return Oracle


def test_lodo_never_trains_on_the_held_out_set_nor_ferplus_valid(oracle):
    data = _faceset()
    res = protocol.lodo(data, oracle)
    assert list(res["sets"]) == list(POSED) and len(oracle.seen) == len(POSED)
    valid = {p for p, v in zip(data.paths, data.ferplus_valid) if v}
    for name, seen in zip(POSED, oracle.seen):
        held = {p for p, d in zip(data.paths, data.datasets) if d == name}
        assert not held & set(seen) and not valid & set(seen)
        # everything else is trained on: the other posed sets, wild, FER+ train
        assert set(seen) == set(data.paths) - held - valid
        assert res["sets"][name]["n"] == len(held) and res["sets"][name]["accuracy"] == 1.0
    assert res["mean_accuracy"] == 1.0 and res["pooled"]["n"] == 30 * len(POSED)
    assert set(res["pooled"]["per_group"]["gender"]) == {"female", "male"}


def test_ferplus_valid_tests_on_majority_rows_and_never_trains_on_valid(oracle):
    data = _faceset()
    res = protocol.ferplus_valid(data, oracle)
    (seen,) = oracle.seen
    assert not {p for p, v in zip(data.paths, data.ferplus_valid) if v} & set(seen)
    assert len(seen) == (~data.ferplus_valid).sum()
    assert res["majority"]["n"] == int(data.majority.sum()) < res["all"]["n"] == int(data.ferplus_valid.sum())


def test_missed_faces_count_as_wrong(oracle):
    data = _faceset()
    jaffe = np.flatnonzero(data.datasets == "jaffe")
    data.found[jaffe[:6]] = False  # 6 of 30 faces not found
    res = protocol.lodo(data, oracle, held_out=("jaffe",))
    m = res["sets"]["jaffe"]
    assert m["detected"] == 24 and m["accuracy"] == pytest.approx(24 / 30) and m["accuracy_detected"] == 1.0
    assert all(data.paths[i] not in oracle.seen[0] for i in jaffe)


def test_posed_kfold_is_subject_disjoint_and_posed_only(oracle):
    data = _faceset()
    res = protocol.posed_kfold(data, oracle, k=5)
    assert res["n"] == np.isin(data.datasets, POSED).sum() and res["accuracy"] == 1.0
    subject_of = dict(zip(data.paths, data.subjects))
    posed_paths = {p for p, d in zip(data.paths, data.datasets) if d in POSED}
    seen_subjects = [{subject_of[p] for p in s} for s in oracle.seen]
    for s in oracle.seen:
        assert set(s) <= posed_paths
    # each posed subject is left out of exactly one fold's training
    for subj in {subject_of[p] for p in posed_paths}:
        assert sum(subj not in s for s in seen_subjects) == 1
    oracle.seen = []
    protocol.posed_kfold(data, oracle, k=5, extra=True)
    valid = {p for p, v in zip(data.paths, data.ferplus_valid) if v}
    assert all(not valid & set(s) and len(set(s) - posed_paths) == 60 for s in oracle.seen)


def test_a_protocol_resumes_from_its_workdir(oracle, tmp_path):
    data = _faceset()
    first = protocol.lodo(data, oracle, workdir=tmp_path)
    assert len(oracle.seen) == 4
    again = protocol.lodo(data, oracle, workdir=tmp_path)
    assert len(oracle.seen) == 4  # nothing trained again
    assert again["mean_accuracy"] == first["mean_accuracy"]


def test_a_split_keeps_a_fine_learners_emotion_probabilities(oracle, tmp_path):
    """A learner whose predict_fine answers has its (N, 7) emotion probabilities kept in the
    split's store beside the class probabilities (NaN rows for missed faces)."""
    class FineOracle(Oracle):
        def predict_fine(self, landmarks):
            return np.full((len(landmarks), 7), 1 / 7, np.float32)

    data = _faceset()
    data.found[np.flatnonzero(data.datasets == "jaffe")[0]] = False
    test = data.datasets == "jaffe"
    r = protocol.run_split(data, ~test & ~data.ferplus_valid, test, FineOracle, tmp_path / "s.npz")
    z = np.load(tmp_path / "s.npz")
    assert z["fine"].shape == (test.sum(), 7) and np.isnan(z["fine"][0]).all()
    np.testing.assert_allclose(z["fine"][1:], 1 / 7)
    np.testing.assert_array_equal(z["probs"], r["probs"])
    protocol.run_split(data, ~test & ~data.ferplus_valid, test, oracle, tmp_path / "plain.npz")
    assert "fine" not in np.load(tmp_path / "plain.npz")  # a 4-class learner: nothing extra


def test_a_split_refuses_overlap(oracle):
    data = _faceset()
    with pytest.raises(ValueError, match="both"):
        protocol.run_split(data, np.ones(len(data), bool), data.datasets == "jaffe", oracle)


def test_the_shared_manifest_splits_hold_nothing_out_twice(faces_dir):
    """On the real manifest: FER+ valid is what its paths say, and LODO's training sets
    hold no row of the held-out set nor of FER+ valid."""
    from fastes.data import is_majority, read_manifest

    samples = read_manifest(faces_dir / "manifest.csv")
    n = len(samples)
    data = FaceSet([s.path for s in samples], np.zeros((n, 68, 2), np.float32), np.ones(n, bool),
                   np.array([s.label for s in samples]), np.array([s.subject for s in samples]),
                   {"dataset": np.array([s.groups["dataset"] for s in samples])}, None,
                   np.array([str(s.path).replace("\\", "/").split("/faces/")[-1].startswith("ferplus/valid/")
                             for s in samples]),
                   np.array([is_majority(s.votes) for s in samples]))
    from fastes.data import is_ferplus_valid

    assert data.ferplus_valid.any()
    np.testing.assert_array_equal(data.ferplus_valid, [is_ferplus_valid(s) for s in samples])
    for name, train, test in protocol.lodo_splits(data):
        assert not (train & (data.datasets == name)).any() and not (train & data.ferplus_valid).any()
        assert (test == (data.datasets == name)).all()
    train, test = protocol.ferplus_split(data)
    assert not (train & data.ferplus_valid).any() and (test <= data.ferplus_valid).all()
    assert 0 < test.sum() < data.ferplus_valid.sum()


def test_unknown_held_out_set_is_an_error(oracle):
    with pytest.raises(ValueError, match="no rows of dataset 'cafe'"):
        protocol.lodo(_faceset(), oracle, held_out=("cafe",))


def test_logreg_learner_fits_soft_targets():
    """The floor recipe learns a separable toy problem (and takes (N, 4) targets)."""
    data = _faceset()
    rng = np.random.default_rng(1)
    lms = np.tile(rng.uniform(60, 190, (1, 68, 2)), (len(data), 1, 1)).astype(np.float32)
    lms[:, 0, 0], lms[:, 16, 0], lms[:, 27, 1], lms[:, 33, 1] = 40, 210, 90, 170
    lms[:, 62, 1] += 8 * data.labels  # the mouth opens with the class
    data.landmarks[:] = lms
    learner = protocol.LogRegLearner(steps=300)
    learner.fit(data)
    assert (learner.predict(lms).argmax(1) == data.labels).mean() > 0.95
    assert len(CLASSES) == learner.w.shape[1]


def test_crossval_command_parses_and_refuses_bad_values():
    import argparse

    from fastes.cli import UsageError
    from fastes.cli import crossval

    parser = argparse.ArgumentParser()
    crossval.add_parser(parser.add_subparsers())
    args = parser.parse_args(["crossval", "lodo", "--model", "logreg"])
    assert args.protocol == "lodo" and args.handler is crossval.run
    assert isinstance(crossval.make_recipe(args)(), protocol.LogRegLearner)
    with pytest.raises(UsageError, match="--epochs"):
        crossval.make_recipe(parser.parse_args(["crossval", "kfold", "--epochs", "0"]))
    with pytest.raises(UsageError, match="--crop"):
        crossval.run(parser.parse_args(["crossval", "ferplus", "--model", "logreg", "--crop", "whole"]))
    for match, argv in [("--balance goes with", ["--model", "landmarks", "--balance", "1"]),
                        ("--tta goes with", ["--model", "vgg11", "--tta", "4"]),
                        ("--face-warp goes with", ["--model", "landmarks", "--face-warp", "1"]),
                        ("--fine-labels goes with", ["--model", "vgg11", "--fine-labels"]),
                        ("--balance-within goes with", ["--model", "two-stream", "--fine-labels",
                                                        "--balance-within", "1"]),
                        ("--posed-weight goes with", ["--model", "vgg11", "--posed-weight", "3"]),
                        ("--members goes with", ["--model", "landmarks", "--members", "2"]),
                        ("--members must be", ["--model", "two-stream", "--members", "0"]),
                        ("--face-warp must be", ["--model", "two-stream", "--face-warp", "-1"]),
                        ("--face-size goes with", ["--model", "landmarks", "--face-size", "64"]),
                        ("--face-size must be", ["--model", "two-stream", "--face-size", "56"]),
                        ("--face-width goes with", ["--model", "vgg11", "--face-width", "2"]),
                        ("--face-width must be", ["--model", "two-stream", "--face-width", "0"])]:
        with pytest.raises(UsageError, match=match):
            crossval.make_recipe(parser.parse_args(["crossval", "lodo", *argv]))
    held = crossval.held_out_sets
    assert held(parser.parse_args(["crossval", "lodo"])) == ("jaffe", "ckplus", "fei", "london")
    assert held(parser.parse_args(["crossval", "lodo", "--held-out", "ckplus, jaffe,ckplus"])) == ("ckplus", "jaffe")
    for match, argv in [("--held-out goes with lodo", ["ferplus", "--held-out", "jaffe"]),
                        ("--held-out takes posed sets", ["lodo", "--held-out", "wild"]),
                        ("--held-out takes posed sets", ["lodo", "--held-out", ","])]:
        with pytest.raises(UsageError, match=match):
            crossval.run(parser.parse_args(["crossval", *argv, "--model", "logreg"]))
