"""Bootstrap intervals and paired comparisons (twodmse.stats) against direct computation."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from twodmse import stats


@pytest.mark.parametrize("block", [None, 7 * 200])  # one block of replicates, or blocks of 7 (the last short)
def test_replicates_equal_scipy_on_the_expanded_resamples(monkeypatch, block):
    if block:
        monkeypatch.setattr(stats, "CACHE_ELEMENTS", block)
    rng = np.random.default_rng(0)
    n = 200
    gold = rng.integers(0, 6, n).astype(float)  # gold scores tie a lot, as STS scores do
    cos = rng.normal(size=(2, 3, n))
    cos[0, 0, :40] = 0.5  # tied predictions take the tie-group path
    counts = stats.resample_counts("toy-test", n, replicates=25)
    reps = stats.spearman_replicates(cos, gold, counts)
    for b in range(25):
        drawn = np.repeat(np.arange(n), counts[b])
        want = [[100 * spearmanr(cos[i, j, drawn], gold[drawn]).statistic for j in range(3)] for i in range(2)]
        np.testing.assert_allclose(reps[b], want, atol=1e-4)  # float32 arrays, float64 sums


def test_resamples_are_shared_by_runs_and_differ_between_datasets():
    a, b = stats.resample_counts("stsb-test", 50), stats.resample_counts("stsb-test", 50)
    assert np.array_equal(a, b) and (a.sum(1) == 50).all() and a.shape == (stats.REPLICATES, 50)
    assert not np.array_equal(a, stats.resample_counts("sts12-test", 50))


def test_interval_covers_the_spread_of_an_independent_sample():
    # 500 pairs with a true Spearman near 0.6: the interval is about +-2 x 1.96 x SE wide and holds the estimate
    rng = np.random.default_rng(1)
    gold = rng.normal(size=500)
    cos = (0.8 * gold + 0.6 * rng.normal(size=500))[None, None]
    reps = stats.spearman_replicates(cos, gold, stats.resample_counts("x-test", 500))
    lo, hi = stats.interval(reps)
    point = 100 * spearmanr(cos[0, 0], gold).statistic
    assert lo[0, 0] < point < hi[0, 0] and 3 < hi[0, 0] - lo[0, 0] < 10


def test_difference_pairs_the_replicates():
    # two methods whose replicates move together: the pairing cancels the shared noise, so a 0.5-point gap with
    # 3-point test noise is still significant (an unpaired comparison would not be)
    shared = np.random.default_rng(2).normal(0, 3, size=1000)
    a = stats.difference([70.5], (70.5 + shared)[None], [70.0], (70.0 + shared)[None])
    assert a["diff"] == pytest.approx(0.5) and a["lo"] == pytest.approx(0.5) and a["p_better"] == 1.0
    assert stats.verdict(a["lo"], a["hi"]) == "holds"


def test_seed_spread_widens_the_interval():
    reps = np.full((3, 100), 70.0) + np.random.default_rng(3).normal(0, 0.1, size=(3, 100))
    one = stats.estimate([70.0], reps[:1])
    three = stats.estimate([69.0, 70.0, 71.0], reps)
    assert three["hi"] - three["lo"] > 2 > 1 > one["hi"] - one["lo"]
    # se = sqrt(var_boot + s^2/3) with s = 1: the half-width is at least 1.96 / sqrt(3)
    assert (three["hi"] - three["lo"]) / 2 == pytest.approx(stats.Z * np.sqrt(1 / 3 + np.var(reps.mean(0), ddof=1)))


@pytest.mark.parametrize("lo, hi, margin, want", [(0.2, 1.0, 0.0, "holds"), (-1.0, -0.2, 0.0, "fails"),
                                                  (-0.2, 1.0, 0.0, "inconclusive"), (-0.8, 0.5, -1.0, "holds"),
                                                  (-3.0, -1.5, -1.0, "fails")])
def test_verdict(lo, hi, margin, want):
    assert stats.verdict(lo, hi, margin) == want
