"""Vectorised two-sample tests of a window against a fixed reference, and Holm's correction.

Used by the windowed drift detectors. All functions are pure and take numpy arrays.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import special

__all__ = ["chi2_homogeneity", "holm_reject", "ks_two_sample"]

FloatArray = NDArray[np.float64]


def ks_two_sample(ref_sorted: FloatArray, window: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Kolmogorov-Smirnov statistics and asymptotic p-values, one per column.

    ``ref_sorted`` is (n, d) with each column sorted; ``window`` is (m, d). The statistic
    is the exact two-sample ``D`` (evaluated at every data point, so ties are handled);
    the p-value uses Kolmogorov's limiting law with ``sqrt(nm/(n+m)) D``, which is
    conservative with ties (discrete scores) and close to exact for n, m >= 100.
    """
    n, d = ref_sorted.shape
    m = window.shape[0]
    win_sorted = np.sort(window, axis=0)
    dstat = np.empty(d)
    for j in range(d):
        ref_j, win_j = ref_sorted[:, j], win_sorted[:, j]
        points = np.concatenate((ref_j, win_j))
        f_ref = np.searchsorted(ref_j, points, side="right") / n
        f_win = np.searchsorted(win_j, points, side="right") / m
        dstat[j] = np.max(np.abs(f_ref - f_win))
    en = np.sqrt(n * m / (n + m))
    # kolmogorov (here) and chdtrc (below) are what scipy.stats' kstwobign.sf and chi2.sf
    # compute, without the generic distribution wrapper around them: the same values.
    return dstat, np.asarray(special.kolmogorov(en * dstat), dtype=np.float64)


def chi2_homogeneity(ref_counts: FloatArray, win_counts: FloatArray) -> tuple[float, float]:
    """Pearson chi-square test that two count vectors come from the same distribution.

    Returns ``(statistic, p_value)`` of the 2 x K contingency test; empty cells are
    dropped. With fewer than two non-empty cells there is nothing to test (p = 1).
    """
    keep = (ref_counts + win_counts) > 0
    ref, win = ref_counts[keep], win_counts[keep]
    if ref.size < 2:
        return 0.0, 1.0
    total = ref + win
    n_ref, n_win = ref.sum(), win.sum()
    grand = n_ref + n_win
    exp_ref, exp_win = total * n_ref / grand, total * n_win / grand
    stat = float(np.sum((ref - exp_ref) ** 2 / exp_ref) + np.sum((win - exp_win) ** 2 / exp_win))
    return stat, float(special.chdtrc(ref.size - 1, stat))


def holm_reject(p_values: FloatArray, alpha: float) -> NDArray[np.bool_]:
    """Holm's step-down procedure: which hypotheses to reject at family-wise level alpha.

    Any rejection happens exactly when Bonferroni would reject (min p <= alpha / m);
    Holm then names more of the changed features at no cost in false alarms.
    """
    m = p_values.size
    order = np.argsort(p_values, kind="stable")
    limits = alpha / (m - np.arange(m))
    passed = p_values[order] <= limits
    n_reject = m if passed.all() else int(np.argmin(passed))
    reject = np.zeros(m, dtype=bool)
    reject[order[:n_reject]] = True
    return reject
