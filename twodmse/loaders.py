"""What `twodmse report` reads: the cached results, each file checked; a bad one raises one ReportError that names it
and the fix. Only CSV, JSON and bootstrap.npz files are read (no torch, no model).

Grids (GRID_GLOB), one file per trained run:

    <results>/<backbone>/<method>/seed<k>/grid.csv

with columns model, dataset, split, layer, dim, spearman, pearson, n_pairs, as `twodmse eval`
writes them (`layer` = number of transformer layers used, `dim` = leading dims kept, scores x100;
model, pearson and n_pairs may be missing). The file has no method column: the backbone, method
and seed come from the folder names, so a variant such as 2dmse-v2 is simply another method folder.

Beside them, each optional: bootstrap replicates (BOOT_GLOB, written by `twodmse eval` beside grid.csv); sweep
selections (SWEEP_GLOB, written by the workflow's rule select; the candidates' own dev grids live deeper,
<method>/sweep/<values>/seed<k>/grid.csv, and are not read as runs); speed CSVs (`twodmse speed`;
<results>/<backbone>/speed/speed.csv names its backbone); training cost (TRAIN_COST, benchmarks/train_step.py
--csv); the untrained run's MTEB scores; and the published numbers (twodmse/published/*.csv).
"""
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from twodmse import stats
from twodmse.util import UserError

GRID_GLOB = "*/*/seed*/grid.csv"
BOOT_GLOB = "*/*/seed*/bootstrap.npz"  # written by `twodmse eval` beside grid.csv
SWEEP_GLOB = "*/*/sweep/selection.json"
GRID_COLUMNS = ["dataset", "split", "layer", "dim", "spearman"]  # required; model/pearson/n_pairs optional
SPEED_COLUMNS = ["model", "layers", "dim", "device", "batch_size", "speedup"]
TRAIN_COST = "speed/train_step.csv"  # under <results>/<backbone>/, written by benchmarks/train_step.py --csv
TRAIN_COST_COLUMNS = ["method", "ms_median", "ms_q1", "ms_q3", "relative_to_baseline"]
UNTRAINED = "untrained"  # the backbone as released: its MTEB scores are checked against MTEB's published ones


class ReportError(UserError):
    """Bad or missing input; the message names the file and the fix."""


def load_grids(results):
    """Every grid.csv under results as one frame with backbone, method, seed columns added."""
    results = Path(results)
    if not results.is_dir():
        raise ReportError(f"results folder {results} does not exist; run `twodmse eval` "
                          f"first or pass --results DIR")
    files = sorted(results.glob(GRID_GLOB))
    if not files:
        stray = sorted(results.rglob("grid.csv"))[:3]
        hint = f" (found {', '.join(map(str, stray))} in another layout)" if stray else ""
        raise ReportError(f"no grid CSVs match {results}/{GRID_GLOB}{hint}; expected "
                          f"<results>/<backbone>/<method>/seed<k>/grid.csv")
    return pd.concat([read_grid(f) for f in files], ignore_index=True)


def read_grid(path):
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not a grid CSV ({str(e).splitlines()[0]}); regenerate it with twodmse eval") \
            from None
    missing = [c for c in GRID_COLUMNS if c not in df.columns]
    if missing:
        raise ReportError(f"{path}: missing column(s) {missing}; a grid CSV needs "
                          f"{GRID_COLUMNS} (as written by `twodmse eval`)")
    for col in ["layer", "dim", "spearman"] + [c for c in ("pearson", "n_pairs") if c in df]:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & (df[col].notna() | (col in ("layer", "dim", "spearman")))
        if bad.any():
            line = int(np.flatnonzero(bad)[0]) + 2  # +1 header, +1 one-based
            raise ReportError(f"{path}:{line}: column {col!r} is {df[col].iloc[line - 2]!r}, "
                              f"not a number; fix or regenerate the file")
        df[col] = values
    # a Spearman x100 lies in [-100, 100] (a grid in [-1, 1] is not ours: twodmse eval writes x100); cells count from 1
    for col, ok, want in (("spearman", df.spearman.abs() <= 100, "in [-100, 100] (Spearman x100)"),
                          ("layer", df.layer >= 1, "a layer number >= 1"), ("dim", df.dim >= 1, "a width >= 1")):
        if not ok.all():
            line = int(np.flatnonzero(~ok)[0]) + 2
            raise ReportError(f"{path}:{line}: column {col!r} is {df[col].iloc[line - 2].item()!r}, not {want}; fix or "
                              f"regenerate the file")
    if len(df) and (df.spearman.abs() <= 1).all():
        raise ReportError(f"{path}: every Spearman lies in [-1, 1]: these are correlations, not the Spearman x100 "
                          f"that twodmse eval writes; regenerate the file with twodmse eval")
    df["layer"], df["dim"] = df["layer"].astype(int), df["dim"].astype(int)
    dup = df.duplicated(["dataset", "split", "layer", "dim"])
    if dup.any():
        line = int(np.flatnonzero(dup)[0]) + 2
        raise ReportError(f"{path}:{line}: cell (dataset, split, layer, dim) appears twice; "
                          f"one row per cell")
    seed_dir, method_dir, backbone_dir = path.parts[-2], path.parts[-3], path.parts[-4]
    df["backbone"], df["method"] = backbone_dir, method_dir  # folder wins: it names variants
    df["seed"] = seed_number(seed_dir)
    return df


def seed_number(folder):
    """seed42 -> 42: a run's seed, from its folder name."""
    return int(re.sub(r"\D", "", folder) or 0)


def load_bootstraps(results):
    """{(backbone, method, seed): bootstrap replicates} of every run whose evaluation wrote bootstrap.npz."""
    return {(p.parts[-4], p.parts[-3], seed_number(p.parts[-2])): read_bootstrap(p)
            for p in sorted(Path(results).glob(BOOT_GLOB))}


def read_bootstrap(path):
    """A run's bootstrap replicates, or one ReportError naming a damaged file."""
    import zipfile
    try:
        boot = stats.load_bootstrap(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ReportError(f"{path}: not a readable bootstrap file ({type(e).__name__}: {e}); rerun that run's "
                          f"evaluation (twodmse eval) to rewrite it") from None
    if missing := [k for k in ("spearman", "layers", "dims", "datasets") if k not in boot]:
        raise ReportError(f"{path}: no {', '.join(missing)} in it; rerun that run's evaluation (twodmse eval)")
    return boot


def load_sweeps(results):
    """Every selection.json under results as rows of backbone, method, target, candidate, score (the dev score on the
    method's selection target), dev_grid_mean, picked; a method whose depths were picked one by one (separate,
    target each-depth) has a row per depth and candidate, method "<m> @k" scored on (k, H). None when there is none."""
    rows = []
    for path in sorted(Path(results).glob(SWEEP_GLOB)):
        try:
            sel = json.loads(path.read_text())
            # selections made before targets and settling: grid mean at the sweep seeds
            where = {"backbone": path.parts[-4], "target": sel.get("target", "all"),
                     "settled": bool(sel.get("settled"))}
            method = path.parts[-3]
            for depth, pick in sel.get("picked_per_depth", {}).items():
                rows += [{**where, "method": f"{method} @{depth}", "candidate": c["candidate"],
                          "score": float(c["score"][depth]), "dev_grid_mean": float(c["dev_grid_mean"]),
                          "picked": c["candidate"] == pick["candidate"], "pick_score": pick.get("score"),
                          "margin": pick.get("margin")} for c in sel["candidates"]]
            if "picked_per_depth" not in sel:
                rows += [{**where, "method": method, "candidate": c["candidate"],
                          "score": float(c.get("score", c["dev_grid_mean"])),
                          "dev_grid_mean": float(c["dev_grid_mean"]),
                          "picked": c["candidate"] == sel["picked"]["candidate"],
                          "pick_score": sel["picked"].get("score"), "margin": sel["picked"].get("margin")}
                         for c in sel["candidates"]]
        except (ValueError, KeyError, TypeError) as e:
            raise ReportError(f"{path}: not a sweep selection ({e!r}); rerun the workflow's rule select") from None
    return pd.DataFrame(rows) if rows else None


def load_dev_picks(results, backbone, sweeps):
    """Rows of method, layer, dim, spearman: each swept method's picked candidate on STS-B dev (its dev grids,
    <results>/<backbone>/<method>/sweep/<candidate>/seed<k>/grid.csv, averaged over seeds; for a method picked depth
    by depth, layer k's rows from depth k's pick); None without sweeps."""
    if sweeps is None:
        return None
    rows = []
    for r in sweeps[(sweeps.backbone == backbone) & sweeps.picked].itertuples():
        method, _, depth = r.method.partition(" @")
        files = sorted((Path(results) / backbone / method / "sweep" / r.candidate).glob("seed*/grid.csv"))
        if files:
            g = pd.concat([read_grid(f) for f in files])
            g = g[(g.dataset == "stsb") & (g.split == "dev") & ((g.layer == int(depth)) if depth else True)]
            rows.append(g.groupby(["layer", "dim"]).spearman.mean().reset_index().assign(method=method))
    return pd.concat(rows, ignore_index=True) if rows else None


def load_speed(path):
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"speed CSV {path} does not exist; run `twodmse speed` or drop --speed")
    return read_columns(path, SPEED_COLUMNS, f"a speed CSV needs {SPEED_COLUMNS}")


def load_published(folder):
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        return None
    df = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files],
                   ignore_index=True)
    for col in ("layer", "dim", "value", "num_layers", "hidden_size"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def load_train_cost(results, backbone):
    """<results>/<backbone>/speed/train_step.csv (benchmarks/train_step.py --csv), or None when there is none."""
    path = Path(results) / backbone / TRAIN_COST
    if not path.is_file():
        return None
    return read_columns(path, TRAIN_COST_COLUMNS, f"rerun benchmarks/train_step.py --csv {path}")


def read_columns(path, columns, fix):
    """A CSV that must hold `columns`; without one, a ReportError naming the file, what is missing and `fix`."""
    df = pd.read_csv(path)
    if missing := [c for c in columns if c not in df.columns]:
        raise ReportError(f"{path}: missing column(s) {missing}; {fix}")
    return df


def load_untrained_mteb(results):
    """{backbone: (its model id, its mteb_scores.csv)} of every backbone whose untrained run MTEB scored."""
    found = {}
    for path in sorted(Path(results).glob(f"*/{UNTRAINED}/seed0/mteb/mteb_scores.csv")):
        run = json.loads((path.parent / "mteb_run.json").read_text())
        found[path.parents[3].name] = (run["config"]["model"], pd.read_csv(path))
    return found


def find_speed(results):
    """Every speed.csv under results; results/<backbone>/speed/speed.csv names its backbone."""
    results = Path(results)
    files = sorted(results.rglob("speed.csv"))
    if not files:
        return None
    parts = [load_speed(f).assign(backbone=folder_backbone(f, results)) for f in files]
    return pd.concat(parts, ignore_index=True)


def folder_backbone(path, results):
    rel = path.relative_to(results).parts
    return rel[0] if len(rel) >= 3 else None

