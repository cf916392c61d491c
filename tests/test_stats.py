"""ovaib_jax.reporting.stats: the paired bootstrap against a literal enumeration of every
resample, its invariants, and the verdicts."""

import itertools

import numpy as np
import pytest

from ovaib_jax.reporting import stats


def _literal(a, b, level=0.95):
    """Every one of the n^n ordered resamples of the pairs, equally likely; the interval is
    the inverse-CDF quantiles of their means."""
    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    means = sorted(np.mean([d[i] for i in idx]) for idx in itertools.product(range(n), repeat=n))
    alpha = (1 - level) / 2
    k_lo = int(np.ceil(alpha * len(means) - 1e-9)) - 1
    k_hi = int(np.ceil((1 - alpha) * len(means) - 1e-9)) - 1
    return means[max(k_lo, 0)], means[k_hi]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [3, 4, 5])
def test_exact_interval_is_that_of_every_resample(n, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    got = stats.paired_bootstrap(a, b)
    lo, hi = _literal(a, b)
    assert got.n == n
    assert got.mean == pytest.approx(np.mean(a - b), abs=1e-12)
    assert got.lo == pytest.approx(lo, abs=1e-12)
    assert got.hi == pytest.approx(hi, abs=1e-12)


def test_hand_computed_interval_of_three_pairs():
    """Differences 0, 0, 3: of the 27 resamples, 8 have mean 0 (cumulative 8/27 > 0.025) and
    1 has mean 3 (the top 1/27 > 0.025, so the upper bound is 3)."""
    got = stats.paired_bootstrap([0.0, 1.0, 5.0], [0.0, 1.0, 2.0])
    assert (got.mean, got.lo, got.hi) == (1.0, 0.0, 3.0)


def test_monte_carlo_agrees_with_the_exact_enumeration(monkeypatch):
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=6), rng.normal(size=6)
    exact = stats.paired_bootstrap(a, b)
    monkeypatch.setattr(stats, "EXACT_LIMIT", 0)
    mc = stats.paired_bootstrap(a, b, n_resamples=200_000)
    width = exact.hi - exact.lo
    assert abs(mc.lo - exact.lo) < 0.03 * width and abs(mc.hi - exact.hi) < 0.03 * width


def test_invariants_and_verdicts():
    a = np.array([0.5, 0.6, 0.7, 0.55, 0.65])
    same = stats.paired_bootstrap(a, a - 0.1)  # a constant difference: a point interval
    assert same.lo == pytest.approx(0.1) and same.hi == pytest.approx(0.1)
    assert stats.verdict(same, "A", "B") == "A better"
    assert stats.verdict(same, "A", "B", higher_is_better=False) == "B better"
    b = a + np.array([0.2, -0.2, 0.1, -0.1, 0.0])
    tie = stats.paired_bootstrap(a, b)
    assert tie.lo < 0 < tie.hi and stats.verdict(tie, "A", "B") == "tie"
    shifted = stats.paired_bootstrap(a + 3.0, b)  # shift-equivariant
    assert shifted.lo == pytest.approx(tie.lo + 3) and shifted.hi == pytest.approx(tie.hi + 3)
    assert tie.lo <= tie.mean <= tie.hi


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="equal-length"):
        stats.paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="level"):
        stats.paired_bootstrap([1.0, 2.0], [1.0, 0.0], level=1.5)
