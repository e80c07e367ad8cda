"""Snakemake script (rule select): pick a method's sweep candidate on STS-B dev, on the cells the method is for.

Each candidate (one combination of the swept `train` values) was trained once per sweep seed (`sweep_seeds`, default:
every seed) and scored on STS-B dev at every (layer, dim) cell. Its score is the mean dev Spearman over the method's
selection target (its SELECT_ON in twodmse/methods/, or `select_on` in the workflow's method_settings; names in
twodmse.cells.CELL_SETS): every cell for an elastic method, (L, H) for baseline, the last layer's widths for mrl,
the diagonal for starbucks; averaged over seeds. The highest wins, a tie going to the candidate first in the order of
the sweep values. `each-depth` (separate) picks each depth k on its own (k, H) cell, so each depth may get its own
values. selection.json records the target, every candidate's score on it (and its dev grid mean), the margin of
the pick over the runner-up, and the pick(s)."""
import math
from pathlib import Path

import pandas as pd

from twodmse import util
from twodmse.cells import CELL_SETS, cell_set


def rule_text(target):
    return (f"highest mean STS-B dev Spearman over {CELL_SETS[target]} ({target}), averaged over seeds; "
            "a tie goes to the candidate first in the order of the sweep values")


def dev_scores(path, target):
    """(score on the target, or {depth: score} for each-depth; the dev grid mean) of one grid.csv."""
    grid = pd.read_csv(path)
    dev = grid[(grid.dataset == "stsb") & (grid.split == "dev")]
    if dev.empty:
        raise ValueError(f"{path}: no STS-B dev rows; a sweep candidate is scored with "
                         "`twodmse eval --datasets stsb --split dev`")
    score = dev.set_index(["layer", "dim"]).spearman
    cells = cell_set(target, sorted(set(dev.layer)), sorted(set(dev.dim)))
    missing = [c for part in (cells.values() if isinstance(cells, dict) else [cells]) for c in part
               if c not in score.index]
    if missing:
        raise ValueError(f"{path}: no STS-B dev score at cell(s) {missing} of the selection target {target}")
    on = (lambda cs: float(score.loc[cs].mean()))
    target_score = {k: on(cs) for k, cs in cells.items()} if isinstance(cells, dict) else on(cells)
    return target_score, float(dev.spearman.mean())


def mean_over_seeds(values):
    """Mean of per-seed scores (numbers, or {depth: number} dicts)."""
    if isinstance(values[0], dict):
        return {k: sum(v[k] for v in values) / len(values) for k in values[0]}
    return sum(values) / len(values)


def best_of(records, key):
    """(the record with the highest key(record), its margin over the runner-up); ties keep the first."""
    ranked = [r for r in records if not math.isnan(key(r))]
    if not ranked:
        raise ValueError(f"every candidate's score is NaN: {[r['run'] for r in records]}")
    best = max(ranked, key=key)  # max keeps the first of equal keys
    others = [key(r) for r in ranked if r is not best]
    return best, (key(best) - max(others)) if others else None


def select(candidates, grids, target="all"):
    """candidates: {run name: {key: value}} in sweep order; grids: {run name: {seed: grid.csv}}; target: a name
    of CELL_SETS. Returns (every candidate's record, the pick, {depth: pick} for each-depth or None)."""
    records = []
    for run, values in candidates.items():
        per_seed = {str(s): dev_scores(path, target) for s, path in grids[run].items()}
        scores = [v[0] for v in per_seed.values()]
        means = [v[1] for v in per_seed.values()]
        records.append({"run": run, "candidate": run.split("/sweep/", 1)[1], "values": dict(values),
                        "score": mean_over_seeds(scores), "score_per_seed": {s: v[0] for s, v in per_seed.items()},
                        "dev_grid_mean": sum(means) / len(means),
                        "dev_grids": sorted(map(str, grids[run].values()))})
    if target != "each-depth":
        best, margin = best_of(records, lambda r: r["score"])
        return records, {**pick_entry(best), "margin": margin}, None
    per_depth = {}
    for depth in records[0]["score"]:
        best, margin = best_of(records, lambda r: r["score"][depth])
        per_depth[str(depth)] = {**pick_entry(best), "score": best["score"][depth], "margin": margin}
    top = per_depth[str(max(records[0]["score"]))]  # the full depth's pick names the method's run
    return records, top, per_depth


def pick_entry(record):
    return {k: record[k] for k in ("run", "candidate", "values", "score", "dev_grid_mean")}


def main(sm):
    candidates = dict(sm.params.candidates)
    seeds = list(sm.params.seeds)
    paths = iter(sm.input)  # the rule lists candidate by candidate, seed by seed
    grids = {run: {s: next(paths) for s in seeds} for run in candidates}
    target = sm.params.target
    records, best, per_depth = select(candidates, grids, target)
    util.write_json(sm.output[0], util.provenance(
        backbone=sm.wildcards.backbone, method=sm.wildcards.method, sweep=dict(sm.params.sweep), seeds=seeds,
        target=target, target_cells=CELL_SETS[target], rule=rule_text(target), picked=best,
        **({"picked_per_depth": per_depth} if per_depth else {}), candidates=records))
    lines = [f"{r['candidate']}: score on {target} {r['score']}, dev grid mean {r['dev_grid_mean']:.3f}\n"
             for r in records]
    picks = {k: p["candidate"] for k, p in per_depth.items()} if per_depth else best["candidate"]
    Path(sm.log[0]).write_text("".join(lines) + f"picked {picks}\n")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821 (set by Snakemake's script directive)
