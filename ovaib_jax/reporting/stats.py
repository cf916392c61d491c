"""Paired comparisons over seeds: "A beats B" as an interval, not as two means.

:func:`paired_t` is the Student t interval of the mean per-seed difference ``a_i - b_i``
(n - 1 degrees of freedom). At the few seeds a sweep runs it keeps its 95 %: with no
true difference and normal per-seed differences it calls "A better" or "B better" 5 %
of the time, where the percentile bootstrap below does 49 %, 25 %, 20 % and 16 % of the
time at 2, 3, 4 and 5 seeds (4000 simulated comparisons each, 2026-12-02; at 2 or 3
seeds its interval is [min, max] of the differences). The sweep report uses it.

:func:`paired_bootstrap` resamples the per-seed differences ``a_i - b_i`` (the same seed
gives both runs the same data order and initialisation draws, so the pairs share their
seed's luck) and returns the percentile interval of their mean. With few seeds the
bootstrap distribution is enumerated exactly (all ``n**n`` equally likely resamples
when that is at most :data:`EXACT_LIMIT`: 3125 at 5 seeds), so the interval does not
depend on a random draw; above that it is a seeded Monte-Carlo estimate.

It cannot see tails the seeds did not draw, so over 5 pairs or fewer it is much
narrower than its level says (above). docs/RESULTS.md's tables used it until 2026-12-02
and use :func:`paired_t` since (``scripts/results_tables.py --interval bootstrap``
renders the old ones).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["EXACT_LIMIT", "PairedDifference", "paired_bootstrap", "paired_t", "verdict"]

EXACT_LIMIT = 100_000  # enumerate every resample when n**n is at most this


class PairedDifference(NamedTuple):
    """Mean of ``a - b`` over the pairs and its interval ``[lo, hi]`` (a paired t or a
    bootstrap interval, whichever function made it)."""

    mean: float
    lo: float
    hi: float
    n: int


def _differences(a: Sequence[float], b: Sequence[float], level: float, name: str) -> np.ndarray:
    """``a - b`` (n,) of two equal-length sequences of n >= 2 finite paired values."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(
            f"{name}: needs two equal-length sequences of >= 2 paired values, got "
            f"{a.size} and {b.size}."
        )
    d = a - b
    if not np.all(np.isfinite(d)):
        raise ValueError(
            f"{name}: non-finite values (a NaN result of a diverged run or probe); "
            "leave those pairs out."
        )
    if not 0 < level < 1:
        raise ValueError(f"{name}: level must be in (0, 1), got {level}.")
    return d


def paired_t(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> PairedDifference:
    """Student t interval of ``mean(a - b)`` over paired values:
    ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)`` (sample sd). Exact coverage when the
    per-seed differences are normal; a point when they are all equal.

    Args:
      a, b: the metric of method A and method B, one value per seed, paired by position;
        equal lengths n >= 2.
      level: coverage of the two-sided interval.
    """
    from scipy import stats as scipy_stats  # a dependency of jax

    d = _differences(a, b, level, "paired_t")
    n = d.size
    half = float(scipy_stats.t.ppf((1 + level) / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    mean = float(d.mean())
    return PairedDifference(mean, mean - half, mean + half, n)


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
    d = _differences(a, b, level, "paired_bootstrap")
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
    """``"{a} better"``, ``"{b} better"`` or ``"tie"`` (the interval covers 0) from
    ``diff`` of ``a - b``; ``"n/a"`` when the interval is not finite."""
    if not (math.isfinite(diff.lo) and math.isfinite(diff.hi)):
        return "n/a"
    if diff.lo <= 0 <= diff.hi:
        return "tie"
    a_wins = (diff.lo > 0) == higher_is_better
    return f"{a} better" if a_wins else f"{b} better"
