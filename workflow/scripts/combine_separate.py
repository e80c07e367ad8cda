"""Snakemake script (rule combine_separate): one grid.csv for the `separate` method.

`separate` trains one model per depth k, cut to k layers (runs/.../model_layers{k}/). Each was scored by
`twodmse eval` into EVAL/layers{k}/grid.csv, which has rows for its layers 1..k; only the layer-k rows are
that model's own cells (the rows of shallower layers belong to the models trained at those depths).
The combined grid has, for every trained depth k, the layer-k rows of model k: the "trained separately" upper
bound. The trained depths are those of the run's train_info.json (every depth 1..L, or method_options.depths).
"""
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from twodmse import stats, util


def layer_grids(eval_dir, depths=None):
    """{k: Path of EVAL/layers{k}/grid.csv}, checked to cover the trained depths (default 1..L) without a gap."""
    eval_dir = Path(eval_dir)
    grids = {}
    for d in eval_dir.glob("layers*"):
        m = re.fullmatch(r"layers(\d+)", d.name)
        if m and (d / "grid.csv").is_file():
            grids[int(m.group(1))] = d / "grid.csv"
    if not grids:
        raise ValueError(f"{eval_dir}: no layers<k>/grid.csv; run `twodmse eval` on each model_layers<k>")
    depths = set(range(1, max(grids) + 1)) if depths is None else set(depths)
    if extra := sorted(set(grids) - depths):
        raise ValueError(f"{eval_dir}: grids of depth(s) {extra}, which this run did not train (it trained "
                         f"{sorted(depths)}); delete the folder so Snakemake evaluates the run again")
    missing = sorted(depths - set(grids))
    if missing:
        raise ValueError(f"{eval_dir}: no grid for depth(s) {missing}; evaluate runs/.../model_layers<k> for "
                         "each of them (or delete the folder so Snakemake redoes it)")
    return dict(sorted(grids.items()))


def combine(grids):
    """The layer-k rows of each depth-k model, as one grid (same columns as twodmse eval writes); grids: layer_grids."""
    parts = []
    for k, path in grids.items():
        df = pd.read_csv(path)
        if df.layer.max() != k:
            raise ValueError(f"{path}: the model of depth {k} has layers up to {df.layer.max()}; "
                             f"expected a model cut to {k} layers")
        parts.append(df[df.layer == k])
    return pd.concat(parts, ignore_index=True)


def combine_bootstrap(grids):
    """bootstrap.npz of the combined grid: the layer-k replicates of each depth-k model (all resampled alike)."""
    parts, first = [], None
    for k, path in grids.items():
        boot = stats.load_bootstrap(path.with_name("bootstrap.npz"))
        if first is None:
            first = boot
        elif not (np.array_equal(boot["dims"], first["dims"]) and np.array_equal(boot["datasets"], first["datasets"])):
            raise ValueError(f"{path.parent}: scored on other widths or data than depth 1; re-evaluate every depth")
        parts.append(boot["spearman"][:, list(boot["layers"]).index(k)])
    return {**first, "spearman": np.stack(parts, axis=1), "layers": np.array(list(grids))}


def provenance(grids):
    """The grid.json of each depth, keyed by depth."""
    infos = {}
    for k, path in grids.items():
        info = path.with_name("grid.json")
        infos[k] = json.loads(info.read_text()) if info.is_file() else None
    return infos


def main(sm):
    eval_dir = Path(sm.input[0])
    trained = json.loads((eval_dir.parent / "train_info.json").read_text())["models"]  # the run's, beside eval/
    grids = layer_grids(eval_dir, [int(k) for k in trained])
    grid = combine(grids)
    util.write_csv(sm.output.grid, grid)
    stats.save_bootstrap(sm.output.boot, combine_bootstrap(grids))
    util.write_json(sm.output.info, util.provenance(
        method="separate", combined_from=str(eval_dir), rule="layer-k rows of the model cut to k layers",
        depths=provenance(grids)))
    with open(sm.log[0], "w") as log:
        print(f"{sm.output.grid}: {len(grid)} cells from {grid.layer.nunique()} models", file=log)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821 (set by Snakemake's script directive)
