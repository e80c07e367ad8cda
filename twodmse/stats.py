"""Uncertainty: bootstrap intervals over test pairs, paired comparisons between runs, spread over seeds.

Paired by construction: every evaluation resamples a dataset's pairs with the same draws (a generator seeded by
the dataset's name, split and size), so replicate b of any two runs saw the same resampled pairs, and the
difference of their replicates is a paired bootstrap of the difference. Resampling is stratified: each dataset
is resampled on its own, and a replicate of a mean over datasets is the mean of their replicates.

A replicate's Spearman is computed exactly (average ranks, ties included, as scipy.stats.spearmanr on the
resampled pairs) but without expanding the resample: a resample is a count per pair, the rank of a pair within
it is the count of pairs below it plus half its tie group (weighted_ranks), and Spearman is the count-weighted
Pearson of those ranks. tests/test_stats.py checks this against scipy on explicit resamples.

    from twodmse import stats
    counts = stats.resample_counts("stsb-test", len(gold))           # [B, n] pairs drawn per replicate
    reps = stats.spearman_replicates(cos, gold, counts)               # cos [L, D, n] -> [B, L, D], x100
    lo, hi = stats.interval(reps)                                     # 95% percentile interval per cell

Over seeds and test pairs together (estimate, difference) the variance is the bootstrap's plus the seeds' s^2/S,
and the interval takes Student's t at the Welch-Satterthwaite degrees of freedom of that sum, so few seeds widen
it as they should; tests/test_stats.py checks its coverage by simulation.
"""
import hashlib
import math

import numpy as np

from . import util

REPLICATES = 1000
LEVEL = 0.95
Z = 1.959963984540054  # the normal quantile of a two-sided 95% interval
CACHE_ELEMENTS = 2 ** 19  # float32 entries per [block, n] array of spearman_replicates


def resample_counts(label, n, replicates=REPLICATES):
    """[replicates, n] int: how often each of n pairs is drawn in each resample, the same for every run."""
    seed = int.from_bytes(hashlib.sha256(f"{label}:{n}".encode()).digest()[:8], "little")
    draws = np.random.default_rng(seed).integers(0, n, size=(replicates, n))
    offsets = np.arange(replicates)[:, None] * n
    return np.bincount((draws + offsets).ravel(), minlength=replicates * n).reshape(replicates, n)


def weighted_ranks(values, counts):
    """Average rank of each item within every resample: [n] values, [B, n] counts -> [B, n] float64.

    An item drawn c times ties with its own copies; ranks of items drawn 0 times are never used."""
    order = np.argsort(values, kind="stable")
    v = np.asarray(values)[order]
    c = np.cumsum(counts[:, order], axis=1, dtype=np.float64)
    below = np.concatenate([np.zeros((len(c), 1)), c], axis=1)  # below[:, i]: items drawn before sorted item i
    first = np.r_[True, v[1:] != v[:-1]]
    start = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    end = np.r_[start[1:], len(v)]
    lo, hi = below[:, start[group]], below[:, end[group]]
    ranks = np.empty_like(lo)
    ranks[:, order] = lo + (hi - lo + 1) / 2
    return ranks


def spearman_replicates(cos, gold, counts):
    """Spearman x100 of every cell on every resample: cos [L, D, n], gold [n] -> [B, L, D] float64.

    In a resample of n draws the mean rank is (n+1)/2, and without tied values the sum of squared centred ranks
    is (n^3 - n - sum over pairs of (c^3 - c)) / 12 for draw counts c (each pair ties with its own copies): only
    the cross term depends on the cell. Arrays are float32 (counts and ranks are exact in it; the sums are
    pairwise), which keeps the bootstrap of a 49-cell grid a small part of an evaluation. Replicates are
    independent, so they are computed a block at a time: [block, n] arrays that stay in the CPU cache."""
    block = max(1, CACHE_ELEMENTS // counts.shape[1])
    return np.concatenate([_replicates(cos, gold, counts[i:i + block]) for i in range(0, len(counts), block)])


def _replicates(cos, gold, counts):
    n = counts.shape[1]
    mid = (n + 1) / 2
    w = counts.astype(np.float32)
    g = (weighted_ranks(gold, counts) - mid).astype(np.float32)
    wg = w * g
    gnorm = np.sqrt((wg.astype(np.float64) * g).sum(1))
    c = counts.astype(np.float64)
    rnorm = np.sqrt((n ** 3 - n - (c ** 3 - c).sum(1)) / 12)  # no tied values
    out = np.empty((len(counts), *cos.shape[:2]))
    for layer in range(cos.shape[0]):
        for j in range(cos.shape[1]):
            values = cos[layer, j]
            order = np.argsort(values, kind="stable")
            if (np.diff(values[order]) > 0).all():  # no tied values (the usual case)
                wo = w[:, order]
                r = np.cumsum(wo, axis=1)
                r -= wo * 0.5
                r += 0.5 - mid  # in place: these arrays are [B, n]
                cross, norm = np.einsum("bi,bi->b", r, wg[:, order], dtype=np.float64), rnorm
            else:
                r = weighted_ranks(values, counts) - mid
                cross, norm = (r * wg).sum(1), np.sqrt((w * r * r).sum(1))
            with np.errstate(invalid="ignore", divide="ignore"):  # a resample with one distinct value: NaN
                out[:, layer, j] = 100 * cross / (norm * gnorm)
    return out


def save_bootstrap(path, boot):
    """bootstrap.npz of one run: spearman [B, L, D] (replicates of each cell's mean over datasets), layers, dims,
    datasets (name-split:pairs, so a comparison can check that two runs were resampled alike)."""
    def write(tmp):
        with open(tmp, "wb") as f:  # np.savez(path) would add ".npz" to a temp name
            np.savez(f, **boot)
    util.atomic_write(path, write)


def load_bootstrap(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def interval(replicates, level=LEVEL):
    """Percentile interval over the first axis: (lo, hi), each of the remaining shape. NaN replicates (a
    resample with a constant side) are left out."""
    tail = 100 * (1 - level) / 2
    return tuple(np.nanpercentile(replicates, [tail, 100 - tail], axis=0))


def _seed_term(points):
    """(variance of a mean over seeds, its degrees of freedom): (s^2/S, S - 1) from the seeds' spread; (0, inf)
    with one seed (no spread to measure)."""
    return (points.var(ddof=1) / len(points), len(points) - 1) if len(points) > 1 else (0.0, math.inf)


def welch_satterthwaite(terms):
    """Effective degrees of freedom of a sum of variance terms [(variance, df)], each estimated with its own df:
    (sum v)^2 / sum(v^2 / df) (Satterthwaite 1946, Welch 1947; JCGM 100:2008 "GUM", Annex G.4.1, eq. G.2b).
    A term with df = inf (the test-pair bootstrap: 1000 replicates of a variance known up to resampling
    noise) adds to the variance but not to the denominator; inf when every term has df = inf."""
    total = sum(v for v, _ in terms)
    denominator = sum(v * v / df for v, df in terms if v > 0 and math.isfinite(df))
    return total * total / denominator if denominator > 0 else math.inf


def t_quantile(df, level=LEVEL):
    """The two-sided `level` quantile of Student's t with df degrees of freedom (the normal one at df = inf)."""
    from scipy.stats import t  # scipy only where intervals are made
    return Z if math.isinf(df) and level == LEVEL else float(t.ppf(0.5 + level / 2, df))


def _interval(centre, terms):
    """centre +- t_{0.975, df} x SE, SE^2 = the sum of the variance terms, df by Welch-Satterthwaite."""
    se = math.sqrt(sum(v for v, _ in terms))
    df = welch_satterthwaite(terms)
    half = t_quantile(df) * se
    return {"lo": centre - half, "hi": centre + half, "se": se, "df": df}


def estimate(points, reps):
    """A statistic's mean over seeds with its 95% interval, over test pairs and seeds.

    points [S]: the statistic of each seed on the full test sets; reps [S, R]: its bootstrap replicates. The
    variance adds the test-pair bootstrap's (the spread of the seed-mean replicates, df = inf) and the seeds'
    (s^2/S, df = S - 1; none with one seed); the interval is mean +- t x SE with the Welch-Satterthwaite degrees
    of freedom (welch_satterthwaite): with 3 seeds and the seed term dominant, t is 4.30, not 1.96."""
    points = np.asarray(points, float)
    terms = [(float(np.nanvar(np.nanmean(reps, axis=0), ddof=1)), math.inf), _seed_term(points)]
    mean = float(points.mean())
    return {"mean": mean, **_interval(mean, terms), "seeds": len(points)}


def difference(a_points, a_reps, b_points, b_reps, seed_variance=None):
    """A - B of one statistic (a cell, or a mean over cells): the difference of seed means, its 95% interval as in
    estimate() with both sides' seed terms (or `seed_variance` = (variance, df), that of the difference of seed
    means, when it is known from elsewhere), and p_better, the paired bootstrap's share of resamples in which A's
    seed mean beats B's (the replicates of both are on the same resampled pairs)."""
    a_points, b_points = np.asarray(a_points, float), np.asarray(b_points, float)
    boot = np.nanmean(a_reps, axis=0) - np.nanmean(b_reps, axis=0)
    diff = float(a_points.mean() - b_points.mean())
    seeds = [seed_variance] if seed_variance is not None else [_seed_term(a_points), _seed_term(b_points)]
    terms = [(float(np.nanvar(boot, ddof=1)), math.inf), *seeds]
    return {"diff": diff, **_interval(diff, terms), "seeds_a": len(a_points), "seeds_b": len(b_points),
            "p_better": float(np.mean(boot[~np.isnan(boot)] > 0))}


def verdict(lo, hi, margin=0.0):
    """The claim 'difference > margin' at 95%: holds when the whole interval is above the margin, fails when it
    is all below, inconclusive otherwise."""
    if lo > margin:
        return "holds"
    if hi < margin:
        return "fails"
    return "inconclusive"
