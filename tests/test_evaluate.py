import numpy as np
import pytest

from fastes.evaluate import group_accuracies, group_value, metrics


def test_metrics_hand_computed():
    # truth 0 0 1 2 3 3, predicted 0 1 1 (missed) 3 0
    m = metrics([0, 0, 1, 2, 3, 3], [0, 1, 1, -1, 3, 0])
    assert m["n"] == 6 and m["detected"] == 5
    assert m["accuracy"] == pytest.approx(3 / 6)          # the missed face counts as wrong
    assert m["accuracy_detected"] == pytest.approx(3 / 5)
    assert m["confusion"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]]
    pc = m["per_class"]
    assert (pc["positive"]["precision"], pc["positive"]["recall"]) == (0.5, 0.5)
    assert (pc["negative"]["precision"], pc["negative"]["recall"]) == (0.5, 1.0)
    assert pc["awe"] == {"support": 1, "missed": 1, "predicted": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert (pc["neutral"]["precision"], pc["neutral"]["recall"]) == (1.0, 0.5)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0 + 2 / 3) / 4)


def test_metrics_per_group_counts_missed_as_wrong():
    groups = {"dataset": ["a", "a", "b", "b"], "age": ["23", "27", "41", ""], "gender": ["", "", "", ""]}
    m = metrics([0, 1, 2, 3], [0, -1, 2, 0], groups)
    assert m["per_group"]["dataset"] == {
        "a": {"n": 2, "detected": 1, "accuracy": 0.5},
        "b": {"n": 2, "detected": 2, "accuracy": 0.5},
    }
    assert set(m["per_group"]["age"]) == {"20-29", "40-49", "unknown"}
    assert m["per_group"]["age"]["20-29"]["accuracy"] == 0.5
    assert "gender" not in m["per_group"]  # no values at all: left out
    assert group_accuracies(m, "dataset") == "a 0.500, b 0.500"
    assert group_accuracies(m, "dataset", with_n=True) == "a 0.500 (n=2), b 0.500 (n=2)"
    assert group_accuracies(m, "gender") == ""


def test_macro_average_counts_classes_predicted_but_absent():
    # truth has only positive; one face predicted awe: awe's F1 (0) enters the macro mean
    m = metrics([0, 0, 0, 0], [0, 0, 0, 2])
    assert m["per_class"]["positive"]["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert m["macro_f1"] == pytest.approx((2 * 0.75 / 1.75 + 0.0) / 2)


def test_metrics_perfect_and_shape_errors():
    m = metrics([0, 1, 2, 3], [0, 1, 2, 3])
    assert m["accuracy"] == m["macro_f1"] == 1.0
    assert np.trace(m["confusion"]) == 4
    with pytest.raises(ValueError):
        metrics([0, 1], [0])


@pytest.mark.parametrize("col,val,expected", [
    ("age", "34", "30-39"), ("age", "adult", "adult"), ("age", "NA", "unknown"),
    ("dataset", "", "unknown"), ("ethnicity", "white", "white"),
])
def test_group_value(col, val, expected):
    assert group_value(col, val) == expected
