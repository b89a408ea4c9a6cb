"""The statistics of the gain table: mean, spread and a t interval over runs, and a
paired test of two arms on the same test cases (scipy)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation and the Student-t confidence interval of the mean.

    One value gives no spread: sd and the interval are None.
    """
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "ci95": None}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci95": [mean - half, mean + half]}


def paired(arm: Sequence[float], reference: Sequence[float]) -> dict[str, Any]:
    """Paired comparison of ``arm`` against ``reference`` on the same items.

    Returns:
        ``{"pairs", "mean_difference", "ci95", "t_p", "wilcoxon_p"}``: the mean
        paired difference with its 95% t interval, and the two-sided paired t-test and
        Wilcoxon signed-rank p-values (None when they are undefined: fewer than two
        pairs, or no difference at all).
    """
    from scipy import stats

    a = np.asarray(arm, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    diff = a - b
    out: dict[str, Any] = {
        "pairs": len(diff),
        "mean_difference": float(diff.mean()) if len(diff) else None,
        "ci95": interval(diff.tolist())["ci95"],
        "t_p": None,
        "wilcoxon_p": None,
    }
    if len(diff) < 2 or not np.any(diff != 0):
        return out
    if diff.std(ddof=1) > 0:
        out["t_p"] = float(stats.ttest_rel(a, b).pvalue)
    out["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
    return out


__all__ = ["interval", "paired"]
