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


def test_paired_t_hand_values():
    """Differences 1, 2, 3: mean 2, sd 1, t_{0.975, 2} = 4.302652729911275 -> 2 +- 2.4841.
    Differences 0.001, 0.05, 0.002 (three seeds agreeing in sign): the bootstrap's
    [min, max] calls A better; the t interval covers 0."""
    got = stats.paired_t([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    half = 4.302652729911275 / np.sqrt(3)
    assert (got.mean, got.n) == (2.0, 3)
    assert got.lo == pytest.approx(2 - half, abs=1e-9) and got.hi == pytest.approx(2 + half)
    d = [0.001, 0.05, 0.002]
    assert stats.verdict(stats.paired_bootstrap(d, [0.0] * 3), "A", "B") == "A better"
    assert stats.verdict(stats.paired_t(d, [0.0] * 3), "A", "B") == "tie"
    same = stats.paired_t([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])  # a constant difference
    assert same.lo == pytest.approx(0.1) == same.hi
    with pytest.raises(ValueError, match="paired_t: needs two equal-length"):
        stats.paired_t([1.0], [1.0])


@pytest.mark.parametrize("n", [3, 5])
def test_paired_t_keeps_its_level_at_few_seeds(n):
    """With no true difference (normal per-seed differences) a 95 % interval excludes 0
    about 5 % of the time: the t interval does (2000 draws: 5 % +- 2.5 %), the percentile
    bootstrap does not (about 25 % at 3 seeds, 16 % at 5)."""
    rng = np.random.default_rng(n)
    draws = [rng.normal(size=n) for _ in range(2000)]
    zeros = np.zeros(n)
    rate_t = np.mean([not (r.lo <= 0 <= r.hi) for r in (stats.paired_t(d, zeros) for d in draws)])
    assert 0.025 < rate_t < 0.075
    boot = [stats.paired_bootstrap(d, zeros) for d in draws[:400]]
    assert np.mean([not (r.lo <= 0 <= r.hi) for r in boot]) > 0.1


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="equal-length"):
        stats.paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match=r"equal-length .* got 3 and 2"):  # (not numpy's
        stats.paired_bootstrap([1.0, 2.0, 3.0], [1.0, 0.0])  # broadcast error)
    with pytest.raises(ValueError, match="level"):
        stats.paired_bootstrap([1.0, 2.0], [1.0, 0.0], level=1.5)


def test_non_finite_values_are_refused_and_give_no_verdict():
    """One NaN made every resample mean NaN, and verdict() then named B the better."""
    with pytest.raises(ValueError, match="non-finite"):
        stats.paired_bootstrap([0.5, float("nan"), 0.7], [0.4, 0.5, 0.6])
    nan = stats.PairedDifference(float("nan"), float("nan"), float("nan"), 3)
    assert stats.verdict(nan, "A", "B") == "n/a"


def test_a_nan_seed_is_reported_the_same_from_memory_and_from_results_json():
    """results.json stores NaN as null: read back, it stays NaN (it had been dropped, so a
    rerun's report showed the other seeds' mean, in bold); the paired comparison leaves
    that seed out and says so in n."""
    import json

    from ovaib_jax import records
    from ovaib_jax.reporting import report

    def run(objective, seed, acc):
        results = {"step": 10, "downstream": {"label/accuracy": acc}}
        return report.RunRecord(objective, seed, "/r", results, 1.0)

    runs = [run("ova_ib", s, v) for s, v in ((42, float("nan")), (0, 0.9), (1, 0.8))]
    runs += [run("clip", s, v) for s, v in ((42, 0.5), (0, 0.6), (1, 0.7))]
    first = report.downstream_table(report.per_objective(runs))
    for r in runs:
        r.results = json.loads(records.dumps(r.results))
    assert report.downstream_table(report.per_objective(runs)) == first
    assert "| ova_ib | nan |" in first and "**60.00 ± 10.00**" in first  # clip's is bold
    table = report.paired_table(runs)
    row = next(line for line in table.splitlines() if "label/accuracy" in line)
    # Differences 0.3 and 0.1: 0.2 +- t_{0.975, 1} * 0.1 = 0.2 +- 1.2706.
    assert "+0.2000 [-1.0706, +1.4706]" in row and "| tie |" in row and row.endswith("| 2 |")
