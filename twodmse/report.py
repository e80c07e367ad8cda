"""`twodmse report`: figures and tables from cached grid results; never loads a model.

Input layout (GRID_GLOB), one file per trained run:

    <results>/<backbone>/<method>/seed<k>/grid.csv

with columns model, dataset, split, layer, dim, spearman, pearson, n_pairs, as `twodmse eval`
writes them (`layer` = number of transformer layers used, `dim` = leading dims kept, scores x100;
model, pearson and n_pairs may be missing). The file has no method column: the backbone, method
and seed come from the folder names, so a variant such as
2dmse-v2 is simply another method folder. Seeds are averaged cell by cell.

Optional speed CSV (columns model, layers, dim, device, batch_size, latency_ms_median,
throughput_median, speedup; by default every <results>/**/speed.csv, where
<results>/<backbone>/speed/speed.csv names its backbone) gives the speed-quality Pareto
figure. Published numbers come from twodmse/published/*.csv, shipped with the package (written by
twodmse/published/build.py; configs/published in the repository links there).

Only cached CSVs are read (no torch), and every output is written atomically:
heatmap_*, curves_*, gain_*, pareto_*, published_* (PNG+PDF), summary_{avg,stsb}.{md,tex}
and index.md (what was written and what was skipped, and why).
"""
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from twodmse import methods
from twodmse.data import EVAL_DATASETS, SPLITS
from twodmse.util import UserError, atomic_write, output_lock, write_text

GRID_GLOB = "*/*/seed*/grid.csv"
GRID_COLUMNS = ["dataset", "split", "layer", "dim", "spearman"]  # required; model/pearson/n_pairs optional
SPEED_COLUMNS = ["model", "layers", "dim", "device", "batch_size", "speedup"]
STS_TEST = list(EVAL_DATASETS)  # the 7 sets papers average: twodmse.data's list (numpy only, no torch)
DEFAULT_PUBLISHED = Path(__file__).resolve().parent / "published"  # package data, found when installed too
# Methods drawn first, in this order (the registry's, then published-only names); anything else follows
# alphabetically.
METHOD_ORDER = ["untrained", *methods.names(), "bert"]
BASELINES = ["baseline", "bert", "full"]  # the default --baseline: first of these present
PUBLISHED_METHODS = {"2dmse", "starbucks"}  # the published lines drawn next to ours
# our methods drawn next to them: the same families plus the baseline, for reference
COMPARED_PREFIXES = ("baseline", "2dmse", "starbucks", "st-matryoshka2d")


class ReportError(UserError):
    """Bad or missing input; the message names the file and the fix."""


# ---------------------------------------------------------------- loading

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
    df = pd.read_csv(path)
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
    df["layer"], df["dim"] = df["layer"].astype(int), df["dim"].astype(int)
    dup = df.duplicated(["dataset", "split", "layer", "dim"])
    if dup.any():
        line = int(np.flatnonzero(dup)[0]) + 2
        raise ReportError(f"{path}:{line}: cell (dataset, split, layer, dim) appears twice; "
                          f"one row per cell")
    seed_dir, method_dir, backbone_dir = path.parts[-2], path.parts[-3], path.parts[-4]
    df["backbone"], df["method"] = backbone_dir, method_dir  # folder wins: it names variants
    df["seed"] = int(re.sub(r"\D", "", seed_dir) or 0)
    return df


def load_speed(path):
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"speed CSV {path} does not exist; run `twodmse speed` or drop --speed")
    df = pd.read_csv(path)
    missing = [c for c in SPEED_COLUMNS if c not in df.columns]
    if missing:
        raise ReportError(f"{path}: missing column(s) {missing}; a speed CSV needs {SPEED_COLUMNS}")
    return df


def load_published(folder):
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        return None
    df = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files],
                   ignore_index=True)
    for col in ("layer", "dim", "value", "num_layers", "hidden_size"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


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


def ordered(methods):
    methods = set(methods)
    return [m for m in METHOD_ORDER if m in methods] + sorted(methods - set(METHOD_ORDER))


def pick_baseline(methods, wanted):
    if wanted:
        if wanted not in methods:
            raise ReportError(f"--baseline {wanted!r} is not among the methods {ordered(methods)}")
        return wanted
    return next((m for m in BASELINES if m in methods), ordered(methods)[0])


# ---------------------------------------------------------------- tables

def summary_table(cells, per_seed, baseline):
    """Per method: grid mean, worst cell, full-size cell, gain over baseline, seed spread.

    The baseline row has gain 0.00, which names it; NaN gains mean no baseline in this view."""
    rows = []
    base_mean = cells[cells.method == baseline].score.mean()
    for method in ordered(cells.method):
        c = cells[cells.method == method]
        worst = c.loc[c.score.idxmin()]
        full = c[(c.layer == cells.layer.max()) & (c.dim == cells.dim.max())].score.mean()
        seed_means = per_seed[per_seed.method == method].groupby("seed").spearman.mean()
        rows.append({"method": method, "seeds": int(c.seeds.max()),
                     "grid mean": c.score.mean(),
                     "seed std": seed_means.std() if len(seed_means) > 1 else np.nan,
                     "worst cell": worst.score, "worst at (L, d)": f"({worst.layer}, {worst.dim})",
                     "full (L, H)": full, "gain vs baseline": c.score.mean() - base_mean})
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


# ---------------------------------------------------------------- figures

def save(fig, out, name, formats):
    import matplotlib.pyplot as plt
    paths = []
    for fmt in formats:
        meta = {"CreationDate": None} if fmt == "pdf" else {}  # reproducible PDFs
        paths.append(atomic_write(Path(out) / f"{name}.{fmt}", lambda tmp, f=fmt, m=meta: fig.savefig(
            tmp, format=f, dpi=150, metadata=m)))  # every figure uses constrained layout
    plt.close(fig)
    return paths


def palette(methods):
    """One distinct colour per method: tab10, or tab20 when there are more than 10 (ablations added)."""
    import matplotlib.pyplot as plt
    colors = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20").colors
    return {m: colors[i % len(colors)] for i, m in enumerate(methods)}


def grid_pivot(c):
    return c.pivot(index="layer", columns="dim", values="score").sort_index(ascending=False)


def draw_heatmap(ax, pivot, cmap, vmin, vmax, fmt):
    """Annotated heatmap, deepest layer on top. Plain matplotlib: seaborn redraws the whole
    figure on every call, which makes many panels slow."""
    import matplotlib.pyplot as plt
    cmap = plt.get_cmap(cmap)
    image = ax.imshow(pivot.values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(pivot.shape[1]), pivot.columns)
    ax.set_yticks(range(pivot.shape[0]), pivot.index)
    for (i, j), v in np.ndenumerate(pivot.values):
        if np.isnan(v):
            continue
        r, g, b, _ = cmap((v - vmin) / (vmax - vmin or 1))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7,
                color="white" if dark else "black")
    return image


def heatmap_panels(panels, title, cbar_label, cmap, vmin, vmax, fmt):
    """One annotated (layer x dim) heatmap per entry of panels {title: pivot}, in rows of 4,
    sharing one colour scale and one colour bar."""
    import matplotlib.pyplot as plt
    first = next(iter(panels.values()))
    ncols = min(len(panels), 4)
    nrows = -(-len(panels) // ncols)
    w = max(3.2, 0.55 * first.shape[1] + 0.8)  # room for one number per cell
    h = max(3.0, 0.35 * first.shape[0] + 1.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols + 1.2, h * nrows + 0.6),
                             squeeze=False, layout="constrained")
    for i, (ax, (name, pivot)) in enumerate(zip(axes.flat, panels.items())):
        image = draw_heatmap(ax, pivot, cmap, vmin, vmax, fmt)
        ax.set_title(name)
        ax.set_xlabel("embedding dims kept")
        ax.set_ylabel("transformer layers used" if i % ncols == 0 else "")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, label=cbar_label, shrink=0.9)
    fig.suptitle(title)
    return fig


def fig_heatmaps(cells, methods, title):
    """(a) one (layer x dim) heatmap per method on a shared colour scale."""
    panels = {m: grid_pivot(cells[cells.method == m]) for m in methods}
    return heatmap_panels(panels, title, "Spearman x100", vmin=cells.score.min(),
                          vmax=cells.score.max(), cmap="viridis", fmt=".1f")


def widths_to_show(dims, k=4):
    """Full width plus up to k-1 others spread evenly (in log scale) down to the smallest."""
    dims = sorted(set(dims), reverse=True)
    idx = np.unique(np.round(np.linspace(0, len(dims) - 1, min(k, len(dims)))).astype(int))
    return [dims[i] for i in idx]


def fig_curves(cells, methods, colors, title):
    """(b) Spearman per layer at several widths, one line per method (2DMSE paper style)."""
    import matplotlib.pyplot as plt
    widths = widths_to_show(cells.dim)
    fig, axes = plt.subplots(1, len(widths), figsize=(3.8 * len(widths) + 1.2, 3.6), sharey=True,
                             squeeze=False, layout="constrained")
    for ax, dim in zip(axes[0], widths):
        for method in methods:
            c = cells[(cells.method == method) & (cells.dim == dim)].sort_values("layer")
            ax.plot(c.layer, c.score, marker="o", ms=4, color=colors[method], label=method)
        ax.set_title(f"dim = {dim}")
        ax.set_xlabel("transformer layers used")
        ax.set_xticks(sorted(cells.layer.unique()))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Spearman x100")
    fig.legend(*axes[0][0].get_legend_handles_labels(), title="method", fontsize=8,
               loc="outside right upper")
    fig.suptitle(title)
    return fig


def fig_gain(cells, methods, baseline, title):
    """(c) method minus baseline per cell, diverging colours centred on zero."""
    base = grid_pivot(cells[cells.method == baseline])
    panels = {f"{m} - {baseline}": grid_pivot(cells[cells.method == m]) - base
              for m in methods if m != baseline}
    # cells missing from either grid give NaN; 0.1 keeps the scale valid if all are NaN
    lim = np.nanmax(np.concatenate([np.abs(g.values).ravel() for g in panels.values()] + [[0.1]]))
    return heatmap_panels(panels, f"{title}\ngain over {baseline} per cell (blue: better)",
                          f"Spearman gain over {baseline}", cmap="RdBu", vmin=-lim, vmax=lim,
                          fmt="+.1f")  # symmetric limits put white at zero


def pareto_front(points):
    """Points not beaten on both speedup and score, sorted by speedup."""
    front, best = [], -np.inf
    for _, p in points.sort_values(["speedup", "score"], ascending=[False, False]).iterrows():
        if p.score > best:
            front.append(p)
            best = p.score
    return pd.DataFrame(front).sort_values("speedup")


def fig_pareto(joined, methods, colors, title):
    """(d) every cell as (speedup, quality); lines join each method's Pareto-optimal cells."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    for method in methods:
        pts = joined[joined.method == method].dropna(subset=["speedup", "score"])
        if pts.empty:
            continue
        ax.scatter(pts.speedup, pts.score, s=14, alpha=0.35, color=colors[method])
        front = pareto_front(pts)
        ax.plot(front.speedup, front.score, marker="o", ms=5, color=colors[method],
                label=f"{method} (Pareto front)")
    ax.set_xscale("log")
    ticks = [t for t in (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
             if t <= joined.speedup.max() * 1.05]
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("speedup over full depth and width (log scale)")
    ax.set_ylabel("Spearman x100 (cells: dots; front: line)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


# ---------------------------------------------------------------- published comparison

def published_for(pub, dataset):
    """Published STS rows for one dataset, one label per (source, method, variant)."""
    metric_ok = pub.metric.isin(["spearman", "pearson_or_spearman"])
    p = pub[metric_ok & (pub.dataset == dataset) & pub.layer.notna() & pub.dim.notna()].copy()
    p = p[p.source_id.isin(["2dmse_reproduce_readme", "starbucks_readme_tableA1"])]
    p["layer_frac"] = p.layer / p.num_layers
    p["dim_frac"] = p.dim / p.hidden_size
    p["label"] = [published_label(r) for r in p.itertuples()]
    return p


def published_label(r):
    source = "ielab 2DMSE-Reproduce" if r.source_id.startswith("2dmse") else "ielab Starbucks A1"
    variant = f" {r.variant.upper()}" if r.variant else ""
    metric = "; Pearson or Spearman, see configs/published" if r.metric == "pearson_or_spearman" else ""
    return f"published {r.method}{variant} ({source}; {r.backbone}{metric})"


def diagonal_cells(cells, fractions):
    """Our (layer, dim) cells nearest to published (layer/L, dim/H) fractions; dims in log scale."""
    layers, dims = np.array(sorted(cells.layer.unique())), np.array(sorted(cells.dim.unique()))
    L, H = layers.max(), dims.max()
    picked = {}  # our layer -> dim; on a shallow grid the largest published size per layer wins
    for layer_frac, dim_frac in sorted(fractions):
        our_l = layers[np.argmin(np.abs(layers / L - layer_frac))]
        our_d = dims[np.argmin(np.abs(np.log2(dims / H) - np.log2(dim_frac)))]
        picked[int(our_l)] = int(our_d)
    return sorted(picked.items())


def fig_published(cells, pub, methods, colors, backbone, view_name):
    """(e) ours and published on shared axes: fraction of depth and of width."""
    import matplotlib.pyplot as plt
    L, H = cells.layer.max(), cells.dim.max()
    methods = [m for m in methods if m.startswith(COMPARED_PREFIXES)] or methods
    pub = pub[pub.method.isin(PUBLISHED_METHODS)]
    fig, axes = plt.subplots(1, 3, figsize=(17, 6), sharey=True, layout="constrained")
    styles = iter(["--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 1))] * 4)
    pub_style = {lab: next(styles) for lab in sorted(pub.label.unique())}

    def ours(ax, c, x, method):
        ax.plot(x, c.score, marker="o", ms=5, lw=2, color=colors[method],
                label=f"ours {method}: {backbone}")

    def theirs(ax, p, x):
        if p.empty:
            ax.text(0.5, 0.02, "no published values for this dataset", transform=ax.transAxes,
                    ha="center", fontsize=8, color="grey")
        for lab, q in p.groupby("label"):
            ax.plot(x(q), q.value, ls=pub_style[lab], marker="s", mfc="none", ms=5,
                    color=colors.get(q.method.iloc[0], "grey"), label=lab)

    ax = axes[0]  # depth at full width
    for m in methods:
        c = cells[(cells.method == m) & (cells.dim == H)].sort_values("layer")
        ours(ax, c, c.layer / L, m)
    p = pub[(pub.dim == pub.hidden_size) & pub.source_id.str.startswith("2dmse")]
    theirs(ax, p.sort_values("layer"), lambda q: q.layer_frac)
    ax.set(title="depth at full width", xlabel="fraction of layers used (layer / L)",
           ylabel=f"{view_name} Spearman x100")

    ax = axes[1]  # width at full depth
    for m in methods:
        c = cells[(cells.method == m) & (cells.layer == L)].sort_values("dim")
        ours(ax, c, c.dim / H, m)
    p = pub[(pub.layer == pub.num_layers) & pub.source_id.str.startswith("2dmse")]
    theirs(ax, p.sort_values("dim"), lambda q: q.dim_frac)
    ax.set_xscale("log", base=2)
    ax.set(title="width at full depth", xlabel="fraction of dims kept (dim / H, log scale)")

    ax = axes[2]  # Starbucks diagonal: depth and width shrink together
    p = pub[pub.source_id == "starbucks_readme_tableA1"].sort_values("layer")
    if not p.empty:
        picked = diagonal_cells(cells, set(zip(p.layer_frac, p.dim_frac)))
        for m in methods:
            c = cells[cells.method == m].set_index(["layer", "dim"]).score
            ours(ax, pd.DataFrame({"score": [c.get(k, np.nan) for k in picked]}),
                 [lay / L for lay, _ in picked], m)
        theirs(ax, p, lambda q: q.layer_frac)
        ax.set_xticks([lay / L for lay, _ in picked],
                      [f"{lay}/{L}\nd={d}" for lay, d in picked], fontsize=7)
    ax.set(title="Starbucks diagonal (ours: nearest cell, ticks show our L, d)",
           xlabel="fraction of layers used; published dims 32..768 of 768")
    for ax in axes:
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"Ours ({backbone}, L={L}, H={H}) next to published numbers "
                 f"(BERT-base backbones, L=12, H=768); {view_name}")
    return fig


# ---------------------------------------------------------------- orchestration

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


def backbone_outputs(grid, backbone, out, formats, baseline, pub, speed, notes):
    """Figures of one backbone (both views) and its rows of the summary tables."""
    all_methods = ordered(grid[grid.backbone == backbone].method.unique())
    colors = palette(ordered(set(all_methods) | PUBLISHED_METHODS))
    baseline = pick_baseline(all_methods, baseline)
    primary = primary_view(grid, backbone)
    if primary is None:
        notes.append(f"{backbone}: neither all 7 STS test sets nor stsb test; published and "
                     f"Pareto figures skipped")
    written, tables = [], {}
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
        title = f"{backbone}: {view_title(view, datasets)}"
        name = f"{slug(backbone)}_{view}"
        written += save(fig_heatmaps(cells, methods, title), out, f"heatmap_{name}", formats)
        written += save(fig_curves(cells, methods, colors, title), out, f"curves_{name}", formats)
        if baseline in methods and len(methods) > 1:
            written += save(fig_gain(cells, methods, baseline, title), out, f"gain_{name}", formats)
        tables[view] = summary_table(cells, per_seed, baseline).assign(backbone=backbone)
        tables[view].attrs["datasets"] = f"{backbone}: {', '.join(datasets)}"
        if view != primary:
            continue
        if speed is not None:
            model_ids = grid.loc[grid.backbone == backbone, "model"].dropna().unique() \
                if "model" in grid else []
            short = f"{backbone}: " + ("STS-B test" if view == "stsb" else
                                       f"mean over {len(datasets)} STS test sets")
            written += pareto_outputs(speed, cells, backbone, model_ids, methods, colors, short,
                                      out, formats, notes)
        if pub is not None:
            fig = fig_published(cells, published_for(pub, view), methods, colors, backbone,
                                "STS average (7 test sets)" if view == "avg" else "STS-B test")
            written += save(fig, out, f"published_{name}", formats)
    return written, tables


def write_tables(tables, out):
    written = []
    for view, parts in tables.items():
        df = pd.concat(parts, ignore_index=True)
        df = df[["backbone"] + [c for c in df.columns if c != "backbone"]]
        what = "STS-B test Spearman" if view == "stsb" else (
            "mean Spearman over STS test sets (" + "; ".join(p.attrs["datasets"] for p in parts) + ")")
        caption = (f"Per-method summary of the (layer x dim) grid, {what}, x100, seed mean. "
                   f"Worst cell = lowest cell; full = deepest layer at full width.")
        written.append(write_text(Path(out) / f"summary_{view}.md", f"{caption}\n\n{markdown(df)}"))
        written.append(write_text(Path(out) / f"summary_{view}.tex", latex(df, caption)))
    return written


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
    written, tables = [], {}
    for backbone in sorted(grid.backbone.unique()):
        w, t = backbone_outputs(grid, backbone, out, formats, baseline, pub, speed_df, notes)
        written += w
        for view, df in t.items():
            tables.setdefault(view, []).append(df)
    written += write_tables(tables, out)
    written.append(write_index(out, written, notes, results))
    return written, notes


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
               "curves_* (score per layer at several widths), gain_* (method minus baseline), "
               "pareto_* (speedup vs quality, needs a speed CSV), published_* (ours next to "
               "published BERT-base numbers by fraction of depth and width); summary_{avg,stsb}"
               ".{md,tex} (grid mean, worst cell, full-size cell per method); index.md lists "
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
