"""`twodmse report`: figures and tables from cached grid results; never loads a model.

It reads results/ through twodmse/loaders.py (the layout: <results>/<backbone>/<method>/seed<k>/grid.csv, one per
run, and what lies beside them). Seeds are averaged cell by cell. What each optional input adds:

- speed CSVs: the speed-quality Pareto figure (pareto_*);
- published numbers (twodmse/published/*.csv, shipped with the package, written by twodmse/published/build.py;
  configs/published in the repository links there): published_*, mteb_published.md;
- sweep selections: sweep_<backbone> (PNG+PDF and .md), each candidate's STS-B dev score and the pick;
- bootstrap replicates: the 'avg' view's uncertainty: whiskers on the curves, hatched gain cells that are not
  significant, claims.md (twodmse/claims.py: each published claim with its cells, numbers and verdict, and every
  method against separate cell by cell), depth_* (separate, baseline, 2dmse, st-matryoshka2d, starbucks and the best
  elastic method per depth at full width, with each one's training cost when benchmarks/train_step.py --csv wrote
  it) and ablations.md (each variant folder <m>-<change> against method <m>, tested the same way).

Every output is written atomically: heatmap_*, curves_*, gain_*, gap_separate_*, gap_cells_*, depth_*, pareto_*,
published_*, sweep_* (PNG+PDF), summary_{avg,stsb}.{md,tex}, backbones.md, mteb_published.md, precision.md,
claims.md, ablations.md and index.md (what was written and what was skipped, and why).
"""
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from twodmse import claims, stats, tables
from twodmse.loaders import (GRID_GLOB, TRAIN_COST, ReportError, find_speed, load_bootstraps, load_dev_picks,
                             load_grids, load_published, load_speed, load_sweeps, load_train_cost, load_untrained_mteb)
from twodmse.cells import CELL_SETS
from twodmse.figures import (fig_curves, fig_depth, fig_gain, fig_gap_cells, fig_heatmaps, fig_pareto, fig_sweep,
                             ordered, palette, save)
from twodmse.published_figure import PUBLISHED_METHODS, fig_published, published_for
from twodmse.tables import markdown, summary_table, write_tables
from twodmse.data import EVAL_DATASETS, SPLITS
from twodmse.util import output_lock, write_text

STS_TEST = list(EVAL_DATASETS)  # the 7 sets papers average: twodmse.data's list (numpy only, no torch)
DEFAULT_PUBLISHED = Path(__file__).resolve().parent / "published"  # package data, found when installed too
BASELINES = ["baseline", "bert", "full"]  # the default --baseline: first of these present
SEPARATE = "separate"  # one model per depth: every method's gap to it is drawn too
# depth_*: these, and the best elastic method (claims.best_elastic), per depth with their training cost
DEPTH_METHODS = [SEPARATE, "baseline", "2dmse", "st-matryoshka2d", "starbucks"]


CLAIMS_HEADER = """# Claims, checked

Computed by `twodmse report` from results/ alone (twodmse/claims.py; nothing here is typed by hand). A verdict is
at 95%: **holds** when the whole interval of A - B is above the margin, **fails** when it is all below,
**inconclusive** otherwise. The interval adds the paired bootstrap over test pairs (1000 resamples of each STS
test set, the same for every run) and the spread over seeds; with one seed, the seed spread is not in it.
Besides the published claims, this suite's own goal: one elastic model within 1.0 of separately trained models in
every cell, each cell tested on its own, for the method picked on dev data and for every method.

"""


ABLATIONS_HEADER = """# Ablations, checked

Computed by `twodmse report` from results/ alone (twodmse/claims.py, check_ablations). A folder <m>-<change> is a
variant of method <m>; variant - <m> is tested as the claims are (paired bootstrap plus seed spread, 95%):
**better** when the whole interval is above 0, **worse** when it is all below, **inconclusive** otherwise. A
variant run at one seed is compared with <m>'s run at that seed, and the seed spread of <m>'s seeds is added for
each side (one run's own seed spread cannot be measured).

"""


def view_bootstraps(boots, backbone, datasets):
    """{(method, seed): replicates} of the runs whose replicates are of exactly this view's datasets."""
    want = sorted(f"{d}-{STANDARD_SPLIT.get(d, 'test')}" for d in datasets)
    return {(m, s): b for (bb, m, s), b in boots.items()
            if bb == backbone and sorted(x.rsplit(":", 1)[0] for x in b["datasets"].tolist()) == want}


def with_intervals(cells, per_seed, boots, baseline):
    """cells plus lo, hi (95% interval of each cell's seed mean, stats.estimate) and not_significant (its
    difference to the baseline has an interval that includes 0, stats.difference); NaN where replicates lack."""
    rows = []
    base = {}
    for r in cells.itertuples():
        cell = [(r.layer, r.dim)]
        side = claims.seed_values(r.method, cell, per_seed, boots)
        est = stats.estimate(*side) if side else {"lo": np.nan, "hi": np.nan}
        if cell[0] not in base:
            base[cell[0]] = claims.seed_values(baseline, cell, per_seed, boots)
        ns = np.nan
        if side and base[cell[0]] and r.method != baseline:
            d = stats.difference(*side, *base[cell[0]])
            ns = stats.verdict(d["lo"], d["hi"]) == "inconclusive"
        rows.append({"lo": est["lo"], "hi": est["hi"], "not_significant": ns})
    return pd.concat([cells.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


def sweep_outputs(sweeps, backbone, out, formats):
    """sweep_<backbone>: every candidate's dev score on its method's selection target, the pick marked (figure and
    table, which also names each target and gives each candidate's dev grid mean)."""
    s = sweeps[sweeps.backbone == backbone]
    base = ordered(s.method.str.partition(" @")[0].unique())  # "separate @2" sorts with separate, by depth
    methods = sorted(s.method.unique(),
                     key=lambda m: (base.index(m.partition(" @")[0]), int(m.partition(" @")[2] or 0)))
    title = f"{backbone}: sweep, candidates scored on STS-B dev"
    written = save(fig_sweep(s, methods, palette(methods), title), out, f"sweep_{slug(backbone)}", formats)
    candidates = list(dict.fromkeys(s.candidate))
    table = s.pivot(index="method", columns="candidate", values="score").loc[methods, candidates]
    grid_mean = s.pivot(index="method", columns="candidate", values="dev_grid_mean").loc[methods, candidates]
    table.insert(0, "target", [s[s.method == m].target.iloc[0] for m in methods])
    table.insert(1, "picked", [s[(s.method == m) & s.picked].candidate.iloc[0] for m in methods])
    table.insert(2, "pick score", [pick_value(s[s.method == m], "pick_score", "score") for m in methods])
    table.insert(3, "margin", [pick_value(s[s.method == m], "margin", None) for m in methods])
    table.insert(4, "settled", ["yes" if s[s.method == m].settled.iloc[0] else "no" for m in methods])
    caption = (f"{title}: each candidate's score on its method's selection target (mean Spearman x100 over those "
               f"cells and the sweep's seeds; targets: " + "; ".join(f"{k}: {CELL_SETS[k]}" for k in
                                                                     dict.fromkeys(table.target)) +
               "); the picked candidate is the method's run in the other figures and tables. Settled: the two "
               "best at the sweep seeds were also trained at the study's other seeds, and the pick is the better "
               "mean over all seeds (selection.json has every seed's score), so it need not be the highest at the "
               "sweep seeds shown here; pick score: the pick's score on its target (over all seeds when settled); "
               "margin: its lead over the runner-up on that score. `<m> @k`: depth k of a method whose depths are "
               "picked one by one. Below, the dev grid mean of every candidate, for comparison.")
    edge = [m for m in methods if len(candidates) > 2 and table.loc[m, "picked"] in (candidates[0], candidates[-1])]
    if edge:  # a pick at the first or last value: the best value may lie beyond the swept range
        caption += f" Picked at an end of the swept values, so the best may lie beyond them: {', '.join(edge)}."
    written.append(write_text(Path(out) / f"sweep_{slug(backbone)}.md",
                              f"{caption}\n\n{markdown(table.reset_index())}\n\nDev grid mean (every cell):\n\n"
                              f"{markdown(grid_mean.reset_index())}"))
    return written


def pick_value(rows, column, fallback):
    """A method's pick's `column` (pick score, margin) as its selection.json records it; for a selection made before
    they were recorded: the pick's score, or its lead over the runner-up (NaN with one candidate)."""
    value = rows[column].iloc[0] if column in rows else None
    if value is not None and not pd.isna(value):
        return float(value)
    scores = rows.score.sort_values(ascending=False).tolist()
    if fallback == "score":
        return float(rows[rows.picked].score.iloc[0])
    return scores[0] - scores[1] if len(scores) > 1 else float("nan")


# ---------------------------------------------------------------- views of the grid

# The split each set is scored on (data.load_eval's default, as MTEB does): SICK-R on all 9,927 pairs.
STANDARD_SPLIT = {name: splits[0] for name, splits in SPLITS.items()}


def scored(grid):
    """Rows on each dataset's standard split."""
    return grid.split == grid.dataset.map(lambda d: STANDARD_SPLIT.get(d, "test"))


def sts_sets(grid, backbone):
    """STS test sets that every method of this backbone has: the average is over the same sets."""
    g = grid[(grid.backbone == backbone) & scored(grid) & grid.dataset.isin(STS_TEST)]
    per_method = [set(d.dataset) for _, d in g.groupby("method")]
    common = set.intersection(*per_method) if per_method else set()
    return [d for d in STS_TEST if d in common]


def cell_scores(grid, backbone, view):
    """Seed-mean score per (method, layer, dim) for a view: 'avg' over STS test sets or 'stsb'.

    Returns (cells, per_seed, datasets), or None when the backbone has no rows for the view."""
    datasets = sts_sets(grid, backbone) if view == "avg" else ["stsb"]
    g = grid[(grid.backbone == backbone) & scored(grid) & grid.dataset.isin(datasets)]
    if g.empty:
        return None
    # unweighted mean over datasets, as the papers average their STS tables
    per_seed = g.groupby(["method", "seed", "layer", "dim"], as_index=False).spearman.mean()
    cells = per_seed.groupby(["method", "layer", "dim"], as_index=False).agg(
        score=("spearman", "mean"), seeds=("seed", "nunique"))
    return cells, per_seed, datasets


def primary_view(grid, backbone):
    """The view compared with published numbers: the 7-set average if complete, else STS-B."""
    if sts_sets(grid, backbone) == STS_TEST:
        return "avg"
    has_stsb = ((grid.backbone == backbone) & (grid.dataset == "stsb") & (grid.split == "test")).any()
    return "stsb" if has_stsb else None


def view_title(view, datasets):
    if view == "stsb":
        return "STS-B test Spearman"
    return f"mean Spearman over {len(datasets)} STS test sets ({', '.join(datasets)})"


def pick_baseline(methods, wanted):
    if wanted:
        if wanted not in methods:
            raise ReportError(f"--baseline {wanted!r} is not among the methods {ordered(methods)}")
        return wanted
    return next((m for m in BASELINES if m in methods), ordered(methods)[0])


# ---------------------------------------------------------------- tables

def short_name(model):
    return re.split(r"/|__", str(model).rstrip("/"))[-1].lower()


def speed_for(speed, backbone, model_ids):
    """Speed rows of this backbone: by the results/<backbone>/ folder they were found in, else
    by model id (last path component) against the backbone name and the grids' model column."""
    by_folder = speed.backbone == backbone
    names = {short_name(backbone)} | {short_name(m) for m in model_ids}
    by_model = speed.backbone.isna() & speed.model.map(short_name).isin(names)
    return speed[by_folder | by_model]


def pareto_outputs(speed, cells, backbone, model_ids, methods, colors, title, out, formats, notes):
    rows = speed_for(speed, backbone, model_ids)
    if rows.empty:
        notes.append(f"no speed rows for backbone {backbone} (models in speed CSV: "
                     f"{sorted(speed.model.unique())}); Pareto figure skipped")
        return []
    written = []
    # one figure per device (and dtype), at the largest batch size: the throughput regime
    keys = ["device"] + (["dtype"] if "dtype" in rows else [])
    for key, d in rows.groupby(keys):
        where = " ".join(map(str, key))
        bs = d.batch_size.max()
        d = d[d.batch_size == bs].rename(columns={"layers": "layer"})
        joined = cells.merge(d[["layer", "dim", "speedup"]], on=["layer", "dim"])
        if joined.empty:
            notes.append(f"speed rows for {backbone} on {where} share no (layer, dim) cell "
                         f"with the grid; Pareto figure skipped")
            continue
        fig = fig_pareto(joined, methods, colors, f"{title}\n{where}, batch size {bs}")
        written += save(fig, out, f"pareto_{slug(backbone)}_{slug(where)}", formats)
    return written


def slug(text):
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(text)).strip("_")


def full_width_speed(speed, backbone, model_ids):
    """Speed rows of one device (cpu first), dtype and the largest batch size, at full width: the speed claim's."""
    rows = speed_for(speed, backbone, model_ids) if speed is not None else None
    if rows is None or rows.empty:
        return None
    device = "cpu" if (rows.device == "cpu").any() else rows.device.iloc[0]
    rows = rows[rows.device == device]
    if "dtype" in rows:
        rows = rows[rows.dtype == rows.dtype.iloc[0]]
    rows = rows[rows.batch_size == rows.batch_size.max()]
    return rows[rows.dim == rows.dim.max()]


def backbone_outputs(grid, backbone, out, formats, baseline, pub, speed, boots, notes, dev=None, cost=None):
    """Figures of one backbone (both views), its rows of the summary tables, its checked claims and ablations, and
    each method against separate."""
    all_methods = ordered(grid[grid.backbone == backbone].method.unique())
    colors = palette(ordered(set(all_methods) | PUBLISHED_METHODS))
    baseline = pick_baseline(all_methods, baseline)
    primary = primary_view(grid, backbone)
    if primary is None:
        notes.append(f"{backbone}: neither all 7 STS test sets nor stsb test; published and "
                     f"Pareto figures skipped")
    written, summaries, claim_rows, ablation_rows, separate_rows, backbone_rows = [], {}, None, [], [], []
    model_ids = grid.loc[grid.backbone == backbone, "model"].dropna().unique() if "model" in grid else []
    for view in ("avg", "stsb"):
        scored = cell_scores(grid, backbone, view)
        if scored is None:
            what = "STS test set shared by all methods" if view == "avg" else "stsb test rows"
            notes.append(f"{backbone}: no {what}; '{view}' figures and table skipped")
            continue
        cells, per_seed, datasets = scored
        methods = ordered(cells.method.unique())
        if len(methods) < len(all_methods):
            notes.append(f"{backbone}: {sorted(set(all_methods) - set(methods))} have no "
                         f"{view} rows and are left out of the '{view}' outputs")
        view_boots = view_bootstraps(boots, backbone, datasets) if view == "avg" else {}
        plain = cells
        if view_boots:  # whiskers on curves, marks on gain cells; the 'stsb' view has no paired replicates
            cells = with_intervals(cells, per_seed, view_boots, baseline)
        if view == "avg":
            claim_rows = claims.check_all(per_seed, view_boots, full_width_speed(speed, backbone, model_ids),
                                          dev=dev)
            ablation_rows = claims.check_ablations(per_seed, view_boots)
            separate_rows = claims.check_each_against_separate(per_seed, view_boots, methods)
            backbone_rows = tables.backbone_rows(per_seed, view_boots, backbone)
        title = f"{backbone}: {view_title(view, datasets)}"
        name = f"{slug(backbone)}_{view}"
        written += save(fig_heatmaps(cells, methods, title), out, f"heatmap_{name}", formats)
        written += save(fig_curves(cells, methods, colors, title), out, f"curves_{name}", formats)
        if baseline in methods and len(methods) > 1:
            written += save(fig_gain(cells, methods, baseline, title), out, f"gain_{name}", formats)
        if SEPARATE in methods and len(methods) > 1:  # the gap of each method to one model per depth
            gap = with_intervals(plain, per_seed, view_boots, SEPARATE) if view_boots else plain
            written += save(fig_gain(gap, methods, SEPARATE, title), out, f"gap_separate_{name}", formats)
            if view_boots:
                best = (claims.best_elastic(dev) or [None])[0]
                shown = [m for m in dict.fromkeys(DEPTH_METHODS + [best]) if m in methods]
                fig = fig_depth(cells, shown, colors, cost, f"{backbone}: mean over {len(datasets)} STS test sets, "
                                "95% intervals", best)
                written += save(fig, out, f"depth_{name}", formats)
                if best is not None:  # where the picked method's gap sits, beside the method it changes, if any
                    by_method = {r["method"]: r for r in separate_rows if "per_cell" in r}
                    shown = [by_method[m] for m in claims.family(best, list(by_method))]
                    fig = fig_gap_cells(shown, f"{backbone}: the elastic goal per cell, {best} picked on dev",
                                        claims.ELASTIC_CLAIM["margin"])
                    written += save(fig, out, f"gap_cells_{name}", formats)
        summaries[view] = summary_table(cells, per_seed, baseline).assign(backbone=backbone)
        summaries[view].attrs["datasets"] = f"{backbone}: {', '.join(datasets)}"
        if view != primary:
            continue
        if speed is not None:
            short = f"{backbone}: " + ("STS-B test" if view == "stsb" else
                                       f"mean over {len(datasets)} STS test sets")
            written += pareto_outputs(speed, cells, backbone, model_ids, methods, colors, short,
                                      out, formats, notes)
        if pub is not None:
            fig = fig_published(cells, published_for(pub, view), methods, colors, backbone,
                                "STS average (7 test sets)" if view == "avg" else "STS-B test")
            written += save(fig, out, f"published_{name}", formats)
    return written, summaries, claim_rows, ablation_rows, separate_rows, backbone_rows


def make_report(results, out, published=DEFAULT_PUBLISHED, speed=None, baseline=None,
                formats=("png", "pdf")):
    """Write every figure and table; returns (written paths, notes about skipped parts)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.backend_bases import FigureCanvasBase
    unknown = set(formats) - set(FigureCanvasBase.get_supported_filetypes())
    if unknown:
        raise ReportError(f"unknown figure format(s) {sorted(unknown)}; choose from "
                          f"{sorted(FigureCanvasBase.get_supported_filetypes())}")
    grid = load_grids(results)
    speed_df = load_speed(speed).assign(backbone=None) if speed else find_speed(results)
    pub = load_published(published) if published else None
    notes = []
    if speed_df is None:
        notes.append(f"no speed CSV (--speed, or {results}/**/speed.csv); Pareto figure skipped")
    if pub is None and published:  # published=None or '' leaves them out on purpose
        notes.append(f"no published CSVs in {published}; pass --published with the folder that "
                     f"twodmse/published/build.py writes (default {DEFAULT_PUBLISHED})")
    sweeps = load_sweeps(results)
    boots = load_bootstraps(results)
    written, summaries, sections, ablations, verdicts, across, precision = [], {}, [], [], {}, [], []
    for backbone in sorted(grid.backbone.unique()):
        dev = load_dev_picks(results, backbone, sweeps)
        cost = load_train_cost(results, backbone)
        if cost is None and SEPARATE in set(grid.method[grid.backbone == backbone]):
            notes.append(f"{backbone}: no {TRAIN_COST} (benchmarks/train_step.py --csv); depth figure without "
                         "training cost")
        w, t, claim_rows, ablation_rows, separate_rows, backbone_rows = backbone_outputs(
            grid, backbone, out, formats, baseline, pub, speed_df, boots, notes, dev, cost)
        written += w
        across += backbone_rows
        if (scored_avg := cell_scores(grid, backbone, "avg")) is not None:
            precision += tables.precision_rows(scored_avg[1], backbone)
        title = f"{backbone}: mean Spearman over the STS test sets"
        if claim_rows:
            sections.append(claims.markdown(claim_rows, title))
            verdicts[backbone] = claim_rows
        if separate_rows:
            sections.append(claims.separate_markdown(separate_rows, f"{backbone}: every method against separate, "
                                                                    "cell by cell"))
        if ablation_rows:
            ablations.append(claims.ablation_markdown(ablation_rows, title))
        if sweeps is not None and (sweeps.backbone == backbone).any():
            written += sweep_outputs(sweeps, backbone, out, formats)
        for view, df in t.items():
            summaries.setdefault(view, []).append(df)
    written += write_tables(summaries, out)
    written += tables.write_backbone_table(across, out)
    written += tables.write_mteb_published(tables.mteb_published_rows(load_untrained_mteb(results), pub), out)
    written += tables.write_precision(precision, out)
    if sections:
        differ = claims.differences_markdown(verdicts)  # first: a verdict that flips with the backbone
        written.append(write_text(Path(out) / "claims.md",
                                  CLAIMS_HEADER + "\n".join(filter(None, [differ, *sections]))))
    if ablations:
        written.append(write_text(Path(out) / "ablations.md", ABLATIONS_HEADER + "\n".join(ablations)))
    written.append(write_index(out, written, notes, results))
    return written, notes


def write_index(out, written, notes, results):
    lines = [f"# Report from {results}", "", "Files:", ""]
    lines += [f"- {Path(p).name}" for p in written]
    if notes:
        lines += ["", "Skipped:", ""] + [f"- {n}" for n in notes]
    return write_text(Path(out) / "index.md", "\n".join(lines) + "\n")


def run(args):
    with output_lock(args.out):
        written, notes = make_report(args.results, args.out, args.published or None, args.speed,
                                     args.baseline, args.formats.split(","))
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"wrote {len(written)} files to {args.out} (list in {Path(args.out) / 'index.md'})")
    return 0


def add_cli(subparsers):
    p = subparsers.add_parser(
        "report", help="figures and tables from cached results (no model needed)",
        description="Read cached grid results and write PNG+PDF figures and markdown+LaTeX "
                    "tables. Grid files are found as RESULTS/<backbone>/<method>/seed<k>/grid.csv "
                    f"(glob {GRID_GLOB}); seeds are averaged cell by cell. Scores are the mean "
                    "Spearman over the 7 STS test sets ('avg') and STS-B test alone ('stsb').",
        epilog="Writes to OUT, per backbone and view: heatmap_* (layer x dim grid per method), "
               "curves_* (score per layer at several widths, 95% whiskers), gain_* (method minus baseline; "
               "hatched: not significant), gap_separate_* (the same against separate, one model per depth), "
               "gap_cells_* (the elastic goal per cell: the method picked on dev, the method it changes and its "
               "variants, minus separate; hatched: fails), "
               "depth_* (per depth at full width: separate, baseline, 2dmse, st-matryoshka2d, starbucks and the best "
               "elastic method, with training cost from RESULTS/<backbone>/speed/train_step.csv), "
               "claims.md (published claims and every method against separate, with computed verdicts; with "
               "several backbones, the claims whose verdict differs between them first), "
               "ablations.md (a folder <m>-<change> against method <m>: better, worse or inconclusive), "
               "pareto_* (speedup vs quality, needs a speed CSV), published_* (ours next to "
               "published BERT-base numbers by fraction of depth and width, or cell for cell on a 12 x 768 "
               "backbone), sweep_* (after a workflow "
               "sweep: each candidate's STS-B dev grid mean, the pick ringed); summary_{avg,stsb}"
               ".{md,tex} (grid mean, worst cell, full-size cell per method); backbones.md (method x backbone: "
               "grid mean, top cell, lower half of the layers, with 95% intervals and seeds); mteb_published.md "
               "(each backbone as released, scored by MTEB at (L, H), beside MTEB's published score); precision.md "
               "(each <m>-bf16 against <m>, cell by cell, against the seed spread); index.md lists "
               "everything and what was skipped. Example: twodmse report --results results "
               "--out figures")
    p.add_argument("--results", default="results", help="folder holding the grid CSVs (default: results)")
    p.add_argument("--out", default="figures", help="folder for figures and tables (default: figures)")
    p.add_argument("--speed", default=None,
                   help="speed CSV from `twodmse speed` (default: every RESULTS/**/speed.csv)")
    p.add_argument("--published", default=str(DEFAULT_PUBLISHED),
                   help="folder of tidy published CSVs, built by twodmse/published/build.py; "
                        "'' leaves them out (default: the copy shipped in the package, "
                        f"{DEFAULT_PUBLISHED})")
    p.add_argument("--baseline", default=None,
                   help="method the gain figure subtracts (default: the first present of "
                        f"{', '.join(BASELINES)}, else the first method)")
    p.add_argument("--formats", default="png,pdf", help="comma-separated figure formats (default: png,pdf)")
    p.set_defaults(func=run)
