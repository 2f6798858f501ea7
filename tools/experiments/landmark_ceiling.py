"""What do the landmarks allow? Off-the-shelf classifiers on the remapped landmarks,
5-fold subject-disjoint over the posed sets (the networks' folds; a missed face counts
as wrong). If no classifier on the exact points gets far above the networks, the
sketches are not what holds them back.

    pip install scikit-learn      # not a fastes dependency; only this script needs it
    python tools/experiments/landmark_ceiling.py

Features: the 68 remapped points (x, y), or the pairwise distances between the 34 drawn
points. Prints accuracy, macro F1, black subjects' accuracy (the worst group) and
accuracy per dataset for each classifier, one line as each finishes. On today's posed
sets (1,544 images) the first seven lines take about a minute on 2 shared cores; gradient
boosting then takes several minutes more. Findings: docs/experiments.md.
"""
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[2]))
try:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
except ImportError:
    raise SystemExit("this script needs scikit-learn: pip install scikit-learn") from None

from baseline_logreg import DRAWN  # noqa: E402  (tools/ is on the path when run as a script)

from fastes import remap  # noqa: E402
from fastes.data import subject_folds  # noqa: E402
from fastes.evaluate import MISSED, group_accuracies, metrics  # noqa: E402
from fastes.train import load_faces  # noqa: E402

def main() -> int:
    faces = load_faces(progress=False)
    folds = subject_folds(faces.subjects, faces.labels, k=5, seed=0)
    ok = faces.found
    r = np.zeros((len(faces), 68, 2))
    r[ok] = remap(faces.landmarks[ok])
    X68 = r.reshape(len(r), -1)
    # pairwise distances among the 34 drawn points (in sketch units: already normalized)
    d = r[:, DRAWN]
    iu = np.triu_indices(len(DRAWN), 1)
    Xd = np.linalg.norm(d[:, :, None] - d[:, None], axis=-1)[:, iu[0], iu[1]]
    y = faces.labels
    def scaled(est):
        return lambda: make_pipeline(StandardScaler(), est)

    # name -> (features, a classifier factory); sklearn's fit starts afresh in every fold
    models = {
        "logistic regression C=1 (68 points)": (X68, scaled(LogisticRegression(C=1.0, max_iter=3000))),
        "logistic regression C=0.1 (68 points)": (X68, scaled(LogisticRegression(C=0.1, max_iter=3000))),
        "SVM, RBF, C=1 (68 points)": (X68, scaled(SVC(C=1.0))),
        "SVM, RBF, C=3 (68 points)": (X68, scaled(SVC(C=3.0))),
        "SVM, RBF, C=10 (68 points)": (X68, scaled(SVC(C=10.0))),
        "k nearest neighbours, k=15 (68 points)": (X68, scaled(KNeighborsClassifier(15))),
        "random forest, 500 trees (68 points)": (X68, lambda: RandomForestClassifier(500, random_state=0)),
        "gradient boosting (68 points)": (X68, lambda: HistGradientBoostingClassifier(random_state=0)),
        "MLP, 128 hidden (68 points)": (X68, scaled(MLPClassifier((128,), alpha=1e-2, max_iter=2000,
                                                                 random_state=0))),
        "logistic regression C=0.1 (34-point distances)": (Xd, scaled(LogisticRegression(C=0.1, max_iter=5000))),
        "SVM, RBF, C=3 (34-point distances)": (Xd, scaled(SVC(C=3.0))),
    }
    for name, (X, mk) in models.items():
        t0 = time.time()
        pred = np.full(len(y), MISSED)
        for f in range(5):
            tr, te = ok & (folds != f), ok & (folds == f)
            pred[te] = mk().fit(X[tr], y[tr]).predict(X[te])
        m = metrics(y, pred, faces.groups)
        g = m["per_group"]
        ds = group_accuracies(m, "dataset")
        print(f"{name:48s} {m['accuracy']:.3f}  F1 {m['macro_f1']:.3f}  black subjects "
              f"{g['ethnicity']['black']['accuracy']:.3f}  ({ds})  {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
