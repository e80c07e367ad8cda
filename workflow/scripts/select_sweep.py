"""Snakemake script (rule select): pick a method's sweep candidate by its STS-B dev grid mean.

Each candidate (one combination of the swept `train` values) was trained once per sweep seed (`sweep_seeds`, default: every seed) and scored on STS-B dev at
every (layer, dim) cell. Its dev grid mean is the mean Spearman over the cells of each seed, averaged over seeds;
the highest wins, a tie goes to the candidate first in the order of the sweep values. selection.json records every
candidate's dev grid mean, the picked values and this rule."""
import math
from pathlib import Path

import pandas as pd

from twodmse import util

RULE = ("highest mean STS-B dev Spearman over every (layer, dim) cell, averaged over seeds; "
        "a tie goes to the candidate first in the order of the sweep values")


def dev_grid_mean(path):
    """Mean Spearman over the STS-B dev cells of one grid.csv."""
    grid = pd.read_csv(path)
    dev = grid[(grid.dataset == "stsb") & (grid.split == "dev")]
    if dev.empty:
        raise ValueError(f"{path}: no STS-B dev rows; a sweep candidate is scored with "
                         "`twodmse eval --datasets stsb --split dev`")
    return float(dev.spearman.mean())


def select(candidates, grids):
    """candidates: {run name: {key: value}} in sweep order; grids: {run name: {seed: grid.csv}}.

    Returns (every candidate's record, the picked one)."""
    records, best = [], None
    for run, values in candidates.items():
        seeds = {str(s): dev_grid_mean(path) for s, path in grids[run].items()}
        mean = sum(seeds.values()) / len(seeds)
        record = {"run": run, "candidate": run.split("/sweep/", 1)[1], "values": dict(values),
                  "dev_grid_mean": mean, "dev_grid_mean_per_seed": seeds, "dev_grids": sorted(map(str, grids[run].values()))}
        records.append(record)
        if not math.isnan(mean) and (best is None or mean > best["dev_grid_mean"]):  # strictly: ties keep the first
            best = record
    if best is None:
        raise ValueError(f"every candidate's dev grid mean is NaN: {[r['run'] for r in records]}")
    return records, best


def main(sm):
    candidates = dict(sm.params.candidates)
    seeds = list(sm.params.seeds)
    paths = iter(sm.input)  # the rule lists candidate by candidate, seed by seed
    grids = {run: {s: next(paths) for s in seeds} for run in candidates}
    records, best = select(candidates, grids)
    util.write_json(sm.output[0], util.provenance(
        backbone=sm.wildcards.backbone, method=sm.wildcards.method, sweep=dict(sm.params.sweep), seeds=seeds,
        rule=RULE, picked={k: best[k] for k in ("run", "candidate", "values", "dev_grid_mean")},
        candidates=records))
    Path(sm.log[0]).write_text("".join(f"{r['candidate']}: dev grid mean {r['dev_grid_mean']:.3f}\n" for r in records)
                               + f"picked {best['candidate']}\n")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821 (set by Snakemake's script directive)
