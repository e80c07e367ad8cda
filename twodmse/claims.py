"""Published claims checked against our results, with computed verdicts (figures/claims.md).

Each claim is stated once below: its source, the two methods it compares, the cells it concerns and the margin
the difference must clear. The statistic is the mean Spearman over those cells (mean over the STS test sets of the
view); a claim "A beats B" is checked on A - B by stats.difference (difference of seed means; 95% interval from the
paired test-pair bootstrap plus the seeds' spread, Student's t at the Welch-Satterthwaite degrees of freedom) and
stats.verdict: holds when the whole interval is above the margin, fails when it is all below, inconclusive otherwise.
The speed claim compares measured encode speedups with L/k. Only cached results are read (grids, bootstrap
replicates, speed.csv); no torch.

    from twodmse import claims
    rows = claims.check_all(per_seed, boots, speed)   # per_seed: method, seed, layer, dim, spearman
    print(claims.markdown(rows))

Ablations are compared the same way (figures/ablations.md): a results folder named <m>-<change> (2dmse-noclip)
is a variant of method <m> (the longest such folder name), and variant - <m> is checked with margin 0 on every
cell, on layers 1..L-1 and on (L, H): better (holds), worse (fails) or inconclusive. A variant run at one seed is
compared with <m>'s run at that seed, with the seed spread of <m>'s seeds on both sides.
"""
import numpy as np

from . import stats
from .cells import CELL_SETS, cell_set

TWODMSE = "Li et al. 2024, 2D Matryoshka Sentence Embeddings (arXiv:2402.14776)"
IELAB = "ielab 2DMSE-Reproduce README @c7467c2 (BERT-S vs 2DMSE)"
STARBUCKS = "ielab/Starbucks README Table A1 @2a3b24f"
ST_2D = ("this suite: the two 2DMSE implementations, AnglE's (SeanLee97/AnGlE) and sentence-transformers' "
         "losses/Matryoshka2dLoss.py, each tuned on its own dev grid mean")

CLAIMS = [
    {"id": "2dmse-shallow", "a": "2dmse", "b": "baseline", "cells": "shallow", "margin": 0.0, "source": TWODMSE,
     "claim": "2DMSE's shallow layers beat those of a model trained at the last layer only"},
    {"id": "2dmse-top", "a": "2dmse", "b": "baseline", "cells": "top", "margin": -1.0, "source": TWODMSE,
     "claim": "2DMSE keeps the full model's quality at (L, H): no more than 1.0 point below it"},
    {"id": "2dmse-vs-mrl", "a": "2dmse", "b": "mrl", "cells": "last-reduced", "margin": 0.0, "source": TWODMSE,
     "claim": "2DMSE beats MRL at the reduced widths of the last layer"},
    {"id": "separate-vs-2dmse", "a": "separate", "b": "2dmse", "cells": "shallow-full", "margin": 0.0,
     "source": f"{IELAB}; {STARBUCKS} (BERT-Separate vs BERT-2DMSE)",
     "claim": "models trained separately for each depth beat 2DMSE at their depth"},
    {"id": "2dmse-vs-st", "a": "2dmse", "b": "st-matryoshka2d", "cells": "all", "margin": 0.0, "source": ST_2D,
     "claim": "our 2dmse (AnglE's recipe) beats sentence-transformers' Matryoshka2dLoss over every cell"},
    {"id": "2dmse-vs-st-shallow", "a": "2dmse", "b": "st-matryoshka2d", "cells": "shallow", "margin": 0.0,
     "source": ST_2D, "claim": "our 2dmse (AnglE's recipe) beats sentence-transformers' Matryoshka2dLoss at layers "
                               "1..L-1"},
    {"id": "starbucks-diagonal", "a": "starbucks", "b": "2dmse", "cells": "starbucks-diagonal", "margin": 0.0,
     "source": f"{STARBUCKS} (BERT-SRL: the Starbucks loss without its SMAE pre-training, as our starbucks)",
     "claim": "Starbucks' diagonal beats 2DMSE on the diagonal"},
]
# Issue 13's goal, a claim of this suite: one set of weights within 1.0 of separate's per-depth models in every cell.
# A is picked on dev data only, as the method closest to separate in its worst dev cell (best_elastic); every cell
# is tested on its own (check_every_cell).
ELASTIC_CLAIM = {"id": "elastic-every-cell", "b": "separate", "cells": "all", "margin": -1.0,
                 "source": f"this suite (issue 13): the gap of {IELAB} and of {STARBUCKS} (BERT-Separate)",
                 "claim": "our best elastic method matches separately trained models in every cell (within 1.0)"}
SPEED_CLAIM = {"id": "speed-layers", "source": "sentence-transformers Adaptive Layer docs (about 2x at half the "
               "layers); the premise of 2DMSE's depth axis", "claim": "encoding with k of L layers is about L/k "
               "times faster (at least 0.8 L/k at every k)", "floor": 0.8}
SPEED_COLUMNS = ["layers", "encode_speedup", "throughput_median", "throughput_iqr"]
def seed_values(method, cells, per_seed, boots):
    """(points [S], replicates [S, R]) of the mean over cells for each seed of a method; None if a seed lacks a
    cell or its bootstrap replicates."""
    rows = per_seed[per_seed.method == method]
    points, reps = [], []
    for seed, g in rows.groupby("seed"):
        scores = g.set_index(["layer", "dim"]).spearman
        boot = boots.get((method, seed))
        if boot is None or any(c not in scores.index for c in cells):
            return None
        layer_at = {n: i for i, n in enumerate(boot["layers"].tolist())}
        dim_at = {d: j for j, d in enumerate(boot["dims"].tolist())}
        if any(n not in layer_at or d not in dim_at for n, d in cells):
            return None
        points.append(float(np.mean([scores[c] for c in cells])))
        reps.append(np.mean([boot["spearman"][:, layer_at[n], dim_at[d]] for n, d in cells], axis=0))
    return (np.array(points), np.array(reps)) if points else None


def df_text(df):
    """How an interval was made: 'normal' with no seed spread in it, else 't, df 2.3' (Welch-Satterthwaite)."""
    return "normal" if np.isinf(df) else f"t, df {df:.1f}"


def shared_cells(claim, per_seed):
    """The claim's kind of cells on the layers and widths both of its methods have (separate may have trained some
    depths only: method_options.depths)."""
    def have(m):
        rows = per_seed[per_seed.method == m]
        return set(rows.layer), set(rows.dim)
    (layers_a, dims_a), (layers_b, dims_b) = have(claim["a"]), have(claim["b"])
    layers, dims = sorted(layers_a & layers_b), sorted(dims_a & dims_b)
    return cell_set(claim["cells"], layers, dims) if layers and dims else []


def check(claim, per_seed, boots, pair_seeds=False, cells=None):
    """One claim's row: its cells, A - B with its interval and the verdict (or why it could not be checked).

    cells: these (layer, dim) cells instead of the claim's kind of cells. pair_seeds (ablations): when A has one
    seed, B is taken at that seed only (same initialisation and data order), and each side's seed spread is B's,
    measured over all of B's seeds (A's cannot be measured)."""
    a, b = claim["a"], claim["b"]
    row = {"id": claim["id"], "claim": claim["claim"], "source": claim["source"], "compared": f"{a} - {b}",
           "margin": claim["margin"]}
    present = set(per_seed.method)
    missing = [m for m in (a, b) if m not in present]
    if missing:
        return {**row, "verdict": "not run", "test": f"no results for {', '.join(missing)}"}
    cells = cells or shared_cells(claim, per_seed)
    if not cells:
        return {**row, "verdict": "not checked", "test": f"{a} and {b} have no (layer, width) cell in common"}
    row["cells"] = f"{CELL_SETS[claim['cells']]}, " + (" ".join(f"({n},{d})" for n, d in cells)
                                                        if len(cells) <= 8 else f"{len(cells)} cells")
    a_seeds = set(per_seed.seed[per_seed.method == a])
    paired = pair_seeds and len(a_seeds) == 1
    b_rows = per_seed[(per_seed.method != b) | per_seed.seed.isin(a_seeds)] if paired else per_seed
    sides = [seed_values(a, cells, per_seed, boots), seed_values(b, cells, b_rows, boots)]
    datasets = {tuple(v["datasets"].tolist()) for (m, _), v in boots.items() if m in (a, b)}
    if None in sides or len(datasets) != 1:
        why = "runs scored on different test sets" if len(datasets) > 1 else \
            f"no {b} run at seed {min(a_seeds)}" if paired and b_rows[b_rows.method == b].empty else \
            "a seed lacks these cells or its bootstrap replicates (bootstrap.npz); rerun its evaluation"
        return {**row, "verdict": "not checked", "test": why}
    spread = seed_values(b, cells, per_seed, boots)[0] if paired else None
    borrowed = spread is not None and len(spread) > 1
    # Borrowed: each side's single-seed variance is B's s^2, estimated with B's S - 1 degrees of freedom.
    d = stats.difference(*sides[0], *sides[1],
                         seed_variance=(2 * spread.var(ddof=1), len(spread) - 1) if borrowed else None)
    verdict = stats.verdict(d["lo"], d["hi"], claim["margin"])
    seeds = f"{d['seeds_a']} vs {d['seeds_b']} seed(s)" + (
        f" (seed {min(a_seeds)}), seed spread of each side from {b}'s {len(spread)} seeds" if borrowed else
        "" if min(d["seeds_a"], d["seeds_b"]) > 1 else ", seed spread not measurable")
    return {**row, **d, "verdict": verdict,
            "test": f"mean over {len(cells)} cell(s) of {a} - {b} = {d['diff']:+.2f}, 95% interval "
                    f"[{d['lo']:+.2f}, {d['hi']:+.2f}] ({df_text(d['df'])}) against margin {claim['margin']:+.1f} "
                    f"({seeds}; paired bootstrap P({a} better) = {d['p_better']:.3f})"}


def best_elastic(dev):
    """(method, its worst cell's gap, that cell): of every method but separate, the one whose worst cell on STS-B dev
    is closest to separate's (the claim on dev data, never on test); dev: rows of method, layer, dim, spearman of
    each method's picked sweep candidate (loaders.load_dev_picks). None without separate or another method."""
    b = ELASTIC_CLAIM["b"]
    if dev is None or b not in set(dev.method):
        return None
    grid = dev.pivot_table(index=["layer", "dim"], columns="method", values="spearman")
    gaps = grid.drop(columns=b).sub(grid[b], axis=0).dropna()
    if gaps.empty:
        return None
    best = gaps.min().idxmax()
    return best, float(gaps[best].min()), gaps[best].idxmin()


def check_every_cell(claim, per_seed, boots):
    """A claim on every cell at once, each cell tested on its own: holds when every cell holds, fails when any cell
    fails, inconclusive otherwise (holding needs all of them, so no correction for the number of cells is due);
    its number is the worst cell's (lowest A - B)."""
    whole = check(claim, per_seed, boots)  # the mean over all cells: the row, or why it cannot be checked
    if "lo" not in whole:
        return whole
    cells = shared_cells(claim, per_seed)
    rows = {c: check(claim, per_seed, boots, cells=[c]) for c in cells}
    verdicts = [r["verdict"] for r in rows.values()]
    verdict = "fails" if "fails" in verdicts else "holds" if set(verdicts) == {"holds"} else "inconclusive"
    (n, d), worst = min(rows.items(), key=lambda item: item[1]["diff"])
    counts = " / ".join(str(verdicts.count(v)) for v in ("holds", "inconclusive", "fails"))
    mean = f"{whole['diff']:+.2f} [{whole['lo']:+.2f}, {whole['hi']:+.2f}]"
    return {**whole, **{k: worst[k] for k in ("diff", "lo", "hi", "p_better")}, "verdict": verdict,
            "method": claim["a"], "per_cell": {c: (r["diff"], r["verdict"]) for c, r in rows.items()},
            "cells": f"every cell, {len(cells)} cells, each tested alone", "worst_cell": (n, d), "counts": counts,
            "mean": mean, "test": f"cells holding / inconclusive / failing: {counts}, against margin "
                                  f"{claim['margin']:+.1f}; worst cell ({n},{d}): {worst['test']}; mean over all "
                                  f"cells {mean}"}


def check_elastic(per_seed, boots, dev):
    """ELASTIC_CLAIM with A = best_elastic(dev)."""
    best = best_elastic(dev)
    if best is None:
        return {"id": ELASTIC_CLAIM["id"], "claim": ELASTIC_CLAIM["claim"], "source": ELASTIC_CLAIM["source"],
                "compared": f"best elastic - {ELASTIC_CLAIM['b']}", "margin": ELASTIC_CLAIM["margin"],
                "verdict": "not run", "test": f"no sweep selections (selection.json) of {ELASTIC_CLAIM['b']} and "
                                             "another method to pick the best elastic method on dev data; run "
                                             "a study config that sweeps both (configs/study.yaml, "
                                             "configs/study-mpnet.yaml)"}
    method, gap, (n, d) = best
    claim = {**ELASTIC_CLAIM, "a": method, "claim": f"{ELASTIC_CLAIM['claim']}: {method}, picked on STS-B dev as "
                                                    f"the closest to separate in its worst cell ({gap:+.2f} at "
                                                    f"({n},{d}))"}
    return check_every_cell(claim, per_seed, boots)


def check_each_against_separate(per_seed, boots, methods):
    """ELASTIC_CLAIM's test for each of methods (but separate itself), the best or not."""
    b = ELASTIC_CLAIM["b"]
    if b not in set(per_seed.method):
        return []
    return [check_every_cell({**ELASTIC_CLAIM, "id": f"{a}-every-cell", "a": a, "claim": f"{a} vs {b}"},
                             per_seed, boots) for a in methods if a != b]


def separate_markdown(rows, title):
    """check_each_against_separate's rows: how far each method is from one model per depth."""
    lines = [f"## {title}", "", "| method - separate | within 1.0 in every cell | worst cell [95%] | "
             "mean over cells [95%] | cells: holds / inconclusive / fails |", "|---|---|---|---|---|"]
    for r in rows:
        if "lo" not in r:
            lines.append(f"| {r['compared']} | **{r['verdict']}** | {r['test']} | | |")
            continue
        (n, d) = r["worst_cell"]
        lines.append(f"| {r['compared']} | **{r['verdict']}** | ({n},{d}) {r['diff']:+.2f} [{r['lo']:+.2f}, "
                     f"{r['hi']:+.2f}] | {r['mean']} | {r['counts']} |")
    return "\n".join(lines) + "\n"


def check_speed(speed, num_layers):
    """The speed claim from speed.csv rows of one device at full width: encode speedup at k layers vs L/k. The
    interval of each speedup spreads it by the relative interquartile ranges of both throughputs."""
    row = {"id": SPEED_CLAIM["id"], "claim": SPEED_CLAIM["claim"], "source": SPEED_CLAIM["source"],
           "compared": "encode speedup / (L/k)", "margin": SPEED_CLAIM["floor"]}
    if speed is None or speed.empty:
        return {**row, "verdict": "not run", "test": "no speed.csv"}
    lacking = [c for c in SPEED_COLUMNS if c not in speed]
    if lacking or num_layers not in set(speed.layers):
        return {**row, "verdict": "not checked", "test": f"speed.csv lacks {lacking or f'{num_layers} layers'}; "
                                                          "rerun `twodmse speed`"}
    full = speed[speed.layers == num_layers].iloc[0]
    parts, ratios, lows, highs = [], [], [], []
    for r in speed[speed.layers < num_layers].sort_values("layers").itertuples():
        ratios.append(r.encode_speedup / (num_layers / r.layers))
        spread = r.throughput_iqr / r.throughput_median + full.throughput_iqr / full.throughput_median
        lows.append(ratios[-1] * (1 - spread))
        highs.append(ratios[-1] * (1 + spread))
        parts.append(f"k={r.layers}: {r.encode_speedup:.2f}x vs {num_layers / r.layers:.2f} "
                     f"(ratio {ratios[-1]:.2f} [{lows[-1]:.2f}, {highs[-1]:.2f}])")
    # it holds if it holds at every k: every low end above the floor; it fails if one k's high end is below
    lo, hi = min(lows), min(highs)
    return {**row, "diff": min(ratios), "lo": lo, "hi": hi,
            "verdict": stats.verdict(lo, hi, SPEED_CLAIM["floor"]),
            "cells": f"{full.device}, width {full.dim}, batch {full.batch_size}",
            "test": "worst k decides, ratio interval from the repeats' IQR: " + "; ".join(parts)}


def check_all(per_seed, boots, speed=None, num_layers=None, dev=None):
    rows = [check(c, per_seed, boots) for c in CLAIMS] + [check_elastic(per_seed, boots, dev)]
    if speed is not None:
        rows.append(check_speed(speed, num_layers or int(per_seed.layer.max())))
    return rows


def markdown(rows, title):
    """The claims as a verdict table, then each claim's test in full."""
    lines = [f"## {title}", "", "| claim | source | verdict | A - B, or speed ratio [95% interval] |",
             "|---|---|---|---|"]
    for r in rows:
        sign = "" if r["id"] == SPEED_CLAIM["id"] else "+"  # a ratio, not a difference
        number = f"{r['diff']:{sign}.2f} [{r['lo']:{sign}.2f}, {r['hi']:{sign}.2f}]" if "lo" in r else ""
        lines.append(f"| {r['claim']} | {r['source']} | **{r['verdict']}** | {number} |")
    lines += ["", "Tests:", ""]
    lines += [f"- `{r['id']}` ({r['compared']}; cells: {r.get('cells', '-')}): {r['test']}" for r in rows]
    return "\n".join(lines) + "\n"


VERDICTS = ("holds", "fails", "inconclusive")


def differences_markdown(rows_by_backbone):
    """The claims checked on several backbones whose verdicts differ there, for the top of claims.md ('' with one
    backbone): a verdict that flips with the backbone is a finding about the backbone, not about the method."""
    if len(rows_by_backbone) < 2:
        return ""
    backbones = list(rows_by_backbone)
    by_id = {}
    for backbone, rows in rows_by_backbone.items():
        for r in rows:
            if r["verdict"] in VERDICTS:
                by_id.setdefault(r["id"], {})[backbone] = r
    differ = {cid: v for cid, v in by_id.items() if len(v) > 1 and len({r["verdict"] for r in v.values()}) > 1}
    lines = ["## Verdicts that differ between backbones", ""]
    if not differ:
        return "\n".join(lines + [f"None: every claim checked on more than one of {', '.join(backbones)} has the "
                                  "same verdict on each.", ""])
    lines += ["| claim | " + " | ".join(backbones) + " |", "|---|" + "---|" * len(backbones)]
    for cid, v in differ.items():
        sign = "" if cid == SPEED_CLAIM["id"] else "+"  # a ratio, not a difference
        cells = [f"**{v[b]['verdict']}** {v[b]['diff']:{sign}.2f} [{v[b]['lo']:{sign}.2f}, {v[b]['hi']:{sign}.2f}]"
                 if b in v and "lo" in v[b] else "" for b in backbones]
        lines.append(f"| `{cid}`: {next(iter(v.values()))['claim']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


ABLATION_CELLS = ("all", "shallow", "top")
ABLATION_VERDICTS = {"holds": "better", "fails": "worse"}


def parent_of(method, methods):
    """The method a variant changes: the longest other name m with method = m + '-' + change, else None."""
    parents = [m for m in methods if m != method and method.startswith(m + "-")]
    return max(parents, key=len) if parents else None


def family(method, methods):
    """method, the method it is a variant of and its own variants, of those in methods: the old and the new of each
    change, side by side."""
    parent = parent_of(method, methods)
    return [method] + ([parent] if parent else []) + sorted(m for m in methods if parent_of(m, methods) == method)


def check_ablations(per_seed, boots):
    """variant - parent of every variant present, on each of ABLATION_CELLS (rows as check())."""
    methods = sorted(set(per_seed.method))
    rows = []
    for variant in methods:
        parent = parent_of(variant, methods)
        for kind in ABLATION_CELLS if parent else ():
            claim = {"id": f"{variant}/{kind}", "a": variant, "b": parent, "cells": kind, "margin": 0.0,
                     "source": "", "claim": f"{variant} vs {parent}, {CELL_SETS[kind]}"}
            rows.append({**check(claim, per_seed, boots, pair_seeds=True), "kind": kind})
    return rows


def ablation_markdown(rows, title):
    lines = [f"## {title}", "", "| variant - method | cells | variant is | A - B [95% interval] |", "|---|---|---|---|"]
    for r in rows:
        number = f"{r['diff']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]" if "lo" in r else ""
        lines.append(f"| {r['compared']} | {CELL_SETS[r['kind']]} | "
                     f"**{ABLATION_VERDICTS.get(r['verdict'], r['verdict'])}** | {number} |")
    lines += ["", "Tests:", ""] + [f"- `{r['id']}`: {r['test']}" for r in rows]
    return "\n".join(lines) + "\n"
