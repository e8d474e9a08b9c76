"""The inter-class contribution matrix of HYDRA (Chen et al. 2021, Fig. 2, Eq. 23).

M[a, b] = (1 / (|S_a| |T_b|)) sum_{k in S_a} score_k(u_b)

S_a: the training samples labelled a (as trained on), T_b: the test samples of class b,
score_k(u_b): sample k's score for the query "summed test loss of class b" (the ``class`` query),
so score_k(u_b) = sum_{k' in T_b} score_k(k') and M[a, b] is the average score over all pairs.
Sign as everywhere: score = change of the test loss if removed, so a POSITIVE entry means the
training class helps the test class (HYDRA's "contribution" has the same sign) and a NEGATIVE
entry means it hurts it.

HYDRA's normalisation ("we divide every matrix entry by sqrt(column sum x row sum)"):
N[a, b] = M[a, b] / sqrt(|r_a c_b|) with r_a = sum_b M[a, b] and c_b = sum_a M[a, b]. The
absolute value keeps the square root real when a row or column sums to a negative number (the
paper's matrices have positive sums); an entry whose row or column sums to zero becomes NaN.
"""

from __future__ import annotations

import numpy as np


def class_contribution(
    scores: np.ndarray, train_labels: np.ndarray, test_labels: np.ndarray, n_classes: int
) -> np.ndarray:
    """M (C, C) from class-query scores (N_train, C), training labels (N_train,), test labels (N_test,)."""
    scores = np.asarray(scores, dtype=np.float64)
    train_labels = np.asarray(train_labels)
    test_sizes = np.bincount(np.asarray(test_labels), minlength=n_classes).astype(np.float64)
    m = np.full((n_classes, n_classes), np.nan)
    for a in range(n_classes):
        rows = scores[train_labels == a]
        if len(rows) == 0:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            m[a] = rows.mean(axis=0) / np.where(test_sizes > 0, test_sizes, np.nan)
    return m


def hydra_normalise(m: np.ndarray) -> np.ndarray:
    """HYDRA Fig. 2: every entry divided by sqrt(|row sum x column sum|) (NaN rows/columns ignored)."""
    r = np.nansum(m, axis=1)
    c = np.nansum(m, axis=0)
    denom = np.sqrt(np.abs(np.outer(r, c)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, m / denom, np.nan)
