"""Paired comparisons over seeds: "A beats B" as an interval, not as two means.

:func:`paired_bootstrap` resamples the per-seed differences ``a_i - b_i`` (the same seed
gives both runs the same data order and initialisation draws, so the pairs share their
seed's luck) and returns the percentile interval of their mean. With few seeds the
bootstrap distribution is enumerated exactly (all ``n**n`` equally likely resamples
when that is at most :data:`EXACT_LIMIT`: 3125 at 5 seeds), so the interval does not
depend on a random draw; above that it is a seeded Monte-Carlo estimate.

Caveat, stated wherever the intervals are printed: a percentile bootstrap over 5 pairs
is narrower than a t interval (it cannot see tails the 5 seeds did not draw); read an
interval that barely excludes 0 as weak evidence.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["EXACT_LIMIT", "PairedDifference", "paired_bootstrap", "verdict"]

EXACT_LIMIT = 100_000  # enumerate every resample when n**n is at most this


class PairedDifference(NamedTuple):
    """Mean of ``a - b`` over the pairs and its bootstrap interval ``[lo, hi]``."""

    mean: float
    lo: float
    hi: float
    n: int


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: Sequence[float]):
    """Quantiles of a discrete distribution (``values`` with probabilities ``weights``):
    the smallest value whose cumulative probability reaches q (inverse CDF)."""
    order = np.argsort(values, kind="stable")
    v, cdf = values[order], np.cumsum(weights[order])
    cdf /= cdf[-1]
    return [float(v[min(np.searchsorted(cdf, q - 1e-12), len(v) - 1)]) for q in qs]


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    level: float = 0.95,
    n_resamples: int = 20_000,
    seed: int = 0,
) -> PairedDifference:
    """Percentile bootstrap interval of ``mean(a - b)`` over paired values.

    Args:
      a, b: the metric of method A and method B, one value per seed, paired by position
        (the same seed at the same index); equal lengths n >= 2.
      level: coverage of the two-sided interval.
      n_resamples: Monte-Carlo resamples, used only when ``n**n > EXACT_LIMIT``.
      seed: of the Monte-Carlo resamples.

    Returns:
      :class:`PairedDifference` (mean difference, interval bounds, n).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(
            f"paired_bootstrap: needs two equal-length sequences of >= 2 paired values, got "
            f"{a.size} and {b.size}."
        )
    d = a - b
    if not np.all(np.isfinite(d)):
        raise ValueError(
            "paired_bootstrap: non-finite values (a NaN result of a diverged run or probe); "
            "leave those pairs out."
        )
    if not 0 < level < 1:
        raise ValueError(f"paired_bootstrap: level must be in (0, 1), got {level}.")
    n = d.size
    alpha = (1 - level) / 2
    if n**n <= EXACT_LIMIT:
        # The mean of a resample depends only on how often each pair was drawn: enumerate
        # the multisets with their multinomial probabilities (n^n resamples in all).
        means, probs = [], []
        for counts in _compositions(n, n):
            c = np.asarray(counts)
            means.append(float(c @ d) / n)
            probs.append(_multinomial(c))
        lo, hi = _weighted_quantiles(
            np.asarray(means), np.asarray(probs, float), (alpha, 1 - alpha)
        )
    else:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_resamples, n))
        lo, hi = (float(x) for x in np.quantile(d[idx].mean(axis=1), (alpha, 1 - alpha)))
    return PairedDifference(float(d.mean()), lo, hi, n)


def _compositions(total: int, parts: int):
    """Every tuple of ``parts`` non-negative integers summing to ``total``."""
    for cuts in itertools.combinations(range(total + parts - 1), parts - 1):
        bounds = (-1, *cuts, total + parts - 1)
        yield tuple(bounds[i + 1] - bounds[i] - 1 for i in range(parts))


def _multinomial(counts: np.ndarray) -> float:
    """Number of ordered resamples with these counts: n! / prod(c_i!)."""
    out = math.factorial(int(counts.sum()))
    for c in counts:
        out //= math.factorial(int(c))
    return float(out)


def verdict(diff: PairedDifference, a: str, b: str, higher_is_better: bool = True) -> str:
    """``"a > b"``, ``"b > a"`` or ``"tie"`` (the interval covers 0) from ``diff`` of
    ``a - b``; ``"n/a"`` when the interval is not finite."""
    if not (math.isfinite(diff.lo) and math.isfinite(diff.hi)):
        return "n/a"
    if diff.lo <= 0 <= diff.hi:
        return "tie"
    a_wins = (diff.lo > 0) == higher_is_better
    return f"{a} better" if a_wins else f"{b} better"
