"""A linear probe: how well a side's rows predict their class labels (downstream performance).

Per seed: ``StratifiedKFold(5, shuffle=True, random_state=seed)``; on each fold a ``StandardScaler`` fitted on
the training rows and ``LogisticRegression(max_iter=1000)`` (scikit-learn's defaults otherwise: lbfgs, L2,
C = 1); the seed's accuracy is the mean over the folds of the fraction of test rows predicted right. Rows go in
as float64, so the numbers do not depend on the file's dtype.
"""
import logging
import warnings

import numpy as np

_logger = logging.getLogger(__name__)

FOLDS = 5


def probe_accuracy(rows, labels, seed, folds=FOLDS):
    """rows: N x D (tensor or array), labels: N class indices -> accuracy averaged over the folds."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(rows.cpu() if hasattr(rows, "cpu") else rows, dtype=np.float64)
    y = np.asarray(labels)
    accs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
            scaler = StandardScaler().fit(X[train])
            clf = LogisticRegression(max_iter=1000).fit(scaler.transform(X[train]), y[train])
            accs.append(float(np.mean(clf.predict(scaler.transform(X[test])) == y[test])))
    unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    if unconverged:
        _logger.warning("probe, seed %s: %d of %d folds stopped at max_iter=1000 before converging", seed,
                        unconverged, folds)
    return float(np.mean(accs))
