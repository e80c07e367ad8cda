"""The tables of `twodmse report`: frames in, markdown and LaTeX out.

summary_{view}.{md,tex}   per backbone and method: grid mean, seed spread, worst cell, full cell, gain over baseline,
                          the layers it has cells at
backbones.md              method x backbone: the grid mean, the top cell and the lower half of the layers, each
                          with its 95% interval (twodmse.stats.estimate) and seed count, side by side
mteb_published.md         each backbone as released (untrained), scored by MTEB at (L, H), beside the score MTEB's
                          own results repository publishes for that model and task
precision.md              each <m>-bf16 run against <m> (fp32), cell by cell: is every difference of the seed means
                          inside <m>'s seed spread there?
"""
from pathlib import Path

import numpy as np
import pandas as pd

from . import claims, stats
from .cells import CELL_SETS, cell_set
from .figures import ordered
from .util import write_text


def layers_named(layers, all_layers):
    """'all' when a method has cells at every layer of its backbone's grid, else the layers it has (separate trains
    only some depths), so that a mean over its cells is not read as a mean over the whole grid."""
    layers = sorted(set(layers))
    return "all" if layers == sorted(set(all_layers)) else ", ".join(map(str, layers))


def summary_table(cells, per_seed, baseline):
    """Per method: grid mean, worst cell, full-size cell, gain over baseline, seed spread, the layers it has cells at.

    Mean, worst cell and gain are over the method's own cells: a method with only some layers is compared with the
    baseline on those. The baseline row has gain 0.00, which names it; NaN gains mean no baseline in this view."""
    rows = []
    base = cells[cells.method == baseline].set_index(["layer", "dim"]).score
    for method in ordered(cells.method):
        c = cells[cells.method == method]
        worst = c.loc[c.score.idxmin()]
        full = c[(c.layer == cells.layer.max()) & (c.dim == cells.dim.max())].score.mean()
        seed_means = per_seed[per_seed.method == method].groupby("seed").spearman.mean()
        base_mean = base.reindex(pd.MultiIndex.from_frame(c[["layer", "dim"]])).mean() if len(base) else np.nan
        rows.append({"method": method, "seeds": int(c.seeds.max()),
                     "grid mean": c.score.mean(),
                     "seed std": seed_means.std() if len(seed_means) > 1 else np.nan,
                     "worst cell": worst.score, "worst at (L, d)": f"({worst.layer}, {worst.dim})",
                     "full (L, H)": full, "gain vs baseline": c.score.mean() - base_mean,
                     "layers": layers_named(c.layer, cells.layer)})
    return pd.DataFrame(rows)


def markdown(df, digits=2):
    def fmt(v):
        return "" if isinstance(v, float) and np.isnan(v) else (
            f"{v:.{digits}f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def latex(df, caption, digits=2):
    """A booktabs table; cells are escaped by pandas, the caption here."""
    for char in "_&%#":
        caption = caption.replace(char, "\\" + char)
    return df.to_latex(index=False, float_format=f"%.{digits}f", na_rep="", caption=caption,
                       escape=True)



def write_tables(tables, out):
    written = []
    for view, parts in tables.items():
        df = pd.concat(parts, ignore_index=True)
        df = df[["backbone"] + [c for c in df.columns if c != "backbone"]]
        what = "STS-B test Spearman" if view == "stsb" else (
            "mean Spearman over STS test sets (" + "; ".join(p.attrs["datasets"] for p in parts) + ")")
        caption = (f"Per-method summary of the (layer x dim) grid, {what}, x100, seed mean. "
                   f"Worst cell = lowest cell; full = deepest layer at full width. Grid mean, worst cell and gain "
                   f"are over the layers named in the last column: a method with cells at only some layers "
                   f"(separate trains only some depths) is compared with the baseline on those cells.")
        written.append(write_text(Path(out) / f"summary_{view}.md", f"{caption}\n\n{markdown(df)}"))
        written.append(write_text(Path(out) / f"summary_{view}.tex", latex(df, caption)))
    return written


# ---------------------------------------------------------------- across backbones

BACKBONE_CELLS = ("all", "top", "lower-half")  # cells.CELL_SETS: the grid mean, (L, H), layers 1..L/2


def backbone_rows(per_seed, boots, backbone):
    """Per method of one backbone: the mean over each of BACKBONE_CELLS with its 95% interval (stats.estimate:
    test-pair bootstrap plus seed spread) and its seed count; a method without bootstrap replicates is left out."""
    rows, all_layers = [], sorted(set(per_seed.layer))
    for method in ordered(per_seed.method):
        mine = per_seed[per_seed.method == method]
        layers, dims = sorted(set(mine.layer)), sorted(set(mine.dim))
        row = {"backbone": backbone, "method": method, "seeds": int(mine.seed.nunique()),
               "layers": layers_named(layers, all_layers), "partial": set()}
        for kind in BACKBONE_CELLS:
            cells = cell_set(kind, layers, dims)
            if cells != cell_set(kind, all_layers, dims):
                row["partial"].add(kind)
            values = claims.seed_values(method, cells, per_seed, boots)
            if values is None:
                break
            row[kind] = stats.estimate(*values)
        else:
            rows.append(row)
    return rows


def backbone_table(rows):
    """backbones.md: one row per method, one column group per backbone (grid mean, top cell, lower half)."""
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    by = {(r["method"], r["backbone"]): r for r in rows}
    head = ["method"] + [f"{b}: {CELL_SETS[k]}" for b in backbones for k in BACKBONE_CELLS] + \
        [f"{b}: seeds" for b in backbones]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in ordered(r["method"] for r in rows):
        cells = []
        for b in backbones:
            r = by.get((method, b))
            cells += [f"{r[k]['mean']:.2f} [{r[k]['lo']:.2f}, {r[k]['hi']:.2f}]" + (" *" if k in r["partial"] else "")
                      if r else "" for k in BACKBONE_CELLS]
        cells += [str(by[(method, b)]["seeds"]) if (method, b) in by else "" for b in backbones]
        lines.append("| " + " | ".join([method] + cells) + " |")
    notes = [f"\\* {r['backbone']}, {r['method']}: cells at layers {r['layers']} only, so each mean marked * covers "
             "only those layers' cells of the column's set." for r in rows if r["partial"]]
    lines += [""] + notes if notes else []
    return "\n".join(lines) + "\n"


def write_backbone_table(rows, out):
    """backbones.md: backbone_table with its caption; nothing when no backbone has bootstrap replicates."""
    if not rows:
        return []
    caption = ("Each method on each backbone: mean Spearman x100 over the STS test sets, averaged over the cells named "
               "in the column (layers 1..L/2: the lower half of the layers, every width), mean of the seeds with its "
               "95% interval (test-pair bootstrap and seed spread, Student's t at Welch-Satterthwaite degrees of "
               "freedom; with one seed, the bootstrap alone). A backbone's columns compare methods on that backbone; "
               "across backbones the grids differ in depth and width.")
    return [write_text(Path(out) / "backbones.md", f"{caption}\n\n{backbone_table(rows)}")]


# |ours - published| at or below this, in Spearman x100, reads "reproduced": MTEB's results repository prints the
# score of one run, and encoding on other hardware or in other batches moves the fourth decimal of a correlation.
REPRODUCED = 0.1


def mteb_published_rows(untrained, pub):
    """One row per backbone and MTEB STS task that MTEB's results repository has for the backbone's model:
    untrained: {backbone: (model id, mteb_scores.csv frame)}; pub: the tidy published rows."""
    if pub is None:
        return []
    published = pub[pub.source_id == "mteb_results_repo"]
    rows = []
    for backbone, (model, scores) in sorted(untrained.items()):
        top = scores[(scores.layer == scores.layer.max()) & (scores.dim == scores.dim.max())]
        theirs = published[published.backbone_label == model].set_index("dataset_label")
        for task, ours in zip(top.task.str.removesuffix("-local"), top.main_score):
            if task in theirs.index:
                r = theirs.loc[task]
                rows.append({"backbone": backbone, "model": model, "task": task, "ours": 100 * float(ours),
                             "published": float(r.value), "source": r.source_url})
    return rows


def write_mteb_published(rows, out):
    """mteb_published.md: mteb_published_rows as a table, with the verdict; nothing without rows."""
    if not rows:
        return []
    lines = ["Each backbone as released (the untrained model), scored by `twodmse mteb` at its top cell (L, H), beside "
             "the main score MTEB's results repository publishes for the same model and task (cosine Spearman x100; "
             "source: the JSON file linked in each row). Reproduced: the difference is at most "
             f"{REPRODUCED} point.", "",
             "| backbone | task | ours | published | ours - published | reproduced | source |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = r["ours"] - r["published"]
        lines.append(f"| {r['backbone']} ({r['model']}) | {r['task']} | {r['ours']:.2f} | {r['published']:.2f} | "
                     f"{diff:+.3f} | {'yes' if abs(diff) <= REPRODUCED else '**no**'} | [json]({r['source']}) |")
    return [write_text(Path(out) / "mteb_published.md", "\n".join(lines) + "\n")]


PRECISION_SUFFIX = "-bf16"  # a variant that differs from its method in bf16 autocast only (configs/default.yaml)


def precision_rows(per_seed, backbone):
    """For each <m>-bf16 with its method m: per cell, the difference of the seed means and m's seed standard
    deviation there; a row per pair with the cells outside that spread. per_seed: method, seed, layer, dim,
    spearman (report.cell_scores)."""
    methods = set(per_seed.method)
    pairs = [(v, v.removesuffix(PRECISION_SUFFIX)) for v in sorted(methods) if v.endswith(PRECISION_SUFFIX)]
    pairs = [(v, m) for v, m in pairs if m in methods]
    if not pairs:
        return []
    by = per_seed.pivot_table(index=["layer", "dim"], columns="method", values="spearman", aggfunc="mean")
    rows = []
    for variant, parent in pairs:
        spread = per_seed[per_seed.method == parent].groupby(["layer", "dim"]).spearman.std(ddof=1)
        diff = (by[variant] - by[parent]).dropna()
        ratio = (diff.abs() / spread.reindex(diff.index)).dropna()
        seeds = [per_seed.seed[per_seed.method == m].nunique() for m in (variant, parent)]
        worst = ratio.idxmax() if len(ratio) else None
        rows.append({"backbone": backbone, "variant": variant, "method": parent, "seeds": seeds,
                     "cells": len(diff), "outside": int((ratio > 1).sum()), "mean": float(diff.mean()),
                     "max_abs": float(diff.abs().max()), "worst": worst,
                     "worst_diff": float(diff[worst]) if worst else float("nan"),
                     "worst_sd": float(spread[worst]) if worst else float("nan")})
    return rows


def write_precision(rows, out):
    """precision.md: precision_rows as a table; nothing without rows."""
    if not rows:
        return []
    lines = ["bf16 autocast in training against fp32: each `<m>-bf16` run (the same recipe and seeds as `<m>`, "
             "bf16: true) minus `<m>`, mean Spearman x100 over the STS test sets, seed means. A cell is inside the "
             "seed spread when the difference is at most `<m>`'s seed standard deviation there (its seeds, "
             "ddof 1). bf16 is a lever for a study only where every cell is inside.", "",
             "| backbone | bf16 - fp32 | seeds | cells outside the seed spread | mean over cells | largest difference "
             "| cell furthest out (difference / seed sd) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        n, d = r["worst"] if r["worst"] else ("-", "-")
        lines.append(f"| {r['backbone']} | {r['variant']} - {r['method']} | {r['seeds'][0]} vs {r['seeds'][1]} | "
                     f"{r['outside']} of {r['cells']} | {r['mean']:+.2f} | {r['max_abs']:.2f} | ({n},{d}): "
                     f"{r['worst_diff']:+.2f} / {r['worst_sd']:.2f} |")
    return [write_text(Path(out) / "precision.md", "\n".join(lines) + "\n")]
