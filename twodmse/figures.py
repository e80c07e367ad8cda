"""The figures of `twodmse report`, one function each: frames in, files out, nothing read from disk.

heatmap (layer x dim grid per method), curves (score per layer at several widths), gain (method minus baseline), gap
cells (the elastic goal's verdict per cell against separate), depth (score per depth at full width, beside training
cost), pareto (speedup vs quality), sweep (dev grid mean per swept value). `save` writes each figure atomically in
every requested format (the tables are twodmse.tables, the figure beside published numbers
twodmse.published_figure).
"""
from pathlib import Path

import numpy as np
import pandas as pd

from . import methods
from .util import atomic_write

# Methods drawn first, in this order (the registry's, then published-only names); anything else follows
# alphabetically.
METHOD_ORDER = ["untrained", *methods.names(), "bert"]


def ordered(names):
    names = set(names)
    return [m for m in METHOD_ORDER if m in names] + sorted(names - set(METHOD_ORDER))


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


def draw_heatmap(ax, pivot, cmap, vmin, vmax, fmt, hatched=None):
    """Annotated heatmap, deepest layer on top; cells True in the `hatched` pivot are hatched. Plain matplotlib:
    seaborn redraws the whole figure on every call, which makes many panels slow."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
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
        if hatched is not None and hatched.values[i, j] == True:  # noqa: E712 (NaN: no mark)
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.4", lw=0))
    return image


def heatmap_panels(panels, title, cbar_label, cmap, vmin, vmax, fmt, hatched=None):
    """One annotated (layer x dim) heatmap per entry of panels {title: pivot}, in rows of 4,
    sharing one colour scale and one colour bar; hatched {title: bool pivot} marks cells."""
    import matplotlib.pyplot as plt
    first = next(iter(panels.values()))
    ncols = min(len(panels), 4)
    nrows = -(-len(panels) // ncols)
    w = max(3.2, 0.55 * first.shape[1] + 0.8)  # room for one number per cell
    h = max(3.0, 0.35 * first.shape[0] + 1.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols + 1.2, h * nrows + 0.6),
                             squeeze=False, layout="constrained")
    for i, (ax, (name, pivot)) in enumerate(zip(axes.flat, panels.items())):
        image = draw_heatmap(ax, pivot, cmap, vmin, vmax, fmt, (hatched or {}).get(name))
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
    """(b) Spearman per layer at several widths, one line per method (2DMSE paper style); whiskers: the 95%
    interval of each cell (columns lo, hi, when the report has bootstrap replicates)."""
    import matplotlib.pyplot as plt
    widths = widths_to_show(cells.dim)
    fig, axes = plt.subplots(1, len(widths), figsize=(3.8 * len(widths) + 1.2, 3.6), sharey=True,
                             squeeze=False, layout="constrained")
    for ax, dim in zip(axes[0], widths):
        for method in methods:
            c = cells[(cells.method == method) & (cells.dim == dim)].sort_values("layer")
            yerr = [c.score - c.lo, c.hi - c.score] if "lo" in c else None  # 95% interval, NaN: none
            ax.errorbar(c.layer, c.score, yerr=yerr, marker="o", ms=4, capsize=2, lw=1.2, color=colors[method],
                        label=method)
        ax.set_title(f"dim = {dim}")
        ax.set_xlabel("transformer layers used")
        ax.set_xticks(sorted(cells.layer.unique()))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Spearman x100")
    fig.legend(*axes[0][0].get_legend_handles_labels(), title="method", fontsize=8,
               loc="outside right upper")
    fig.suptitle(title)
    return fig


def fig_depth(cells, methods, colors, cost, title, best=None):
    """Per depth at full width, one line per method with 95% whiskers (columns lo, hi), the method `best` marked;
    beside it, when cost (rows of method, relative_to_baseline, ms_median, ms_q1, ms_q3 from
    benchmarks/train_step.py) is given, each method's training cost relative to baseline, whiskers at the step
    time's quartiles."""
    import matplotlib.pyplot as plt
    width = max(cells.dim)
    costed = [m for m in methods if cost is not None and m in set(cost.method)]
    fig, axes = plt.subplots(1, 2 if costed else 1, figsize=(11 if costed else 7, 4), squeeze=False,
                             layout="constrained", width_ratios=[2, 1] if costed else None)
    ax = axes[0][0]
    for method in methods:
        c = cells[(cells.method == method) & (cells.dim == width)].sort_values("layer")
        yerr = [c.score - c.lo, c.hi - c.score] if "lo" in c else None
        ax.errorbar(c.layer, c.score, yerr=yerr, marker="o", ms=4, capsize=2, lw=2.2 if method == best else 1.2,
                    color=colors[method], label=f"{method} (best elastic on dev)" if method == best else method)
    ax.set_xlabel(f"transformer layers used (dim = {width})")
    ax.set_xticks(sorted(cells.layer.unique()))
    ax.set_ylabel("Spearman x100")
    ax.grid(alpha=0.3)
    ax.legend(title="method", fontsize=8)
    if costed:
        ax = axes[0][1]
        c = cost.set_index("method").loc[costed]
        scale = c.relative_to_baseline / c.ms_median  # quartiles of step time, in units of baseline's median
        ax.barh(range(len(costed)), c.relative_to_baseline, color=[colors[m] for m in costed],
                xerr=[(c.ms_median - c.ms_q1) * scale, (c.ms_q3 - c.ms_median) * scale], capsize=2)
        ax.set_yticks(range(len(costed)), costed)
        ax.invert_yaxis()
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.set_xlabel("training cost / baseline's\n(step time at the same steps;\nwhiskers: quartiles)")
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title)
    return fig


def fig_gain(cells, methods, baseline, title):
    """(c) method minus baseline per cell, diverging colours centred on zero; hatched: the difference's 95%
    interval includes 0 (column not_significant, when the report has bootstrap replicates)."""
    base = grid_pivot(cells[cells.method == baseline])
    # re-sorted: a difference over unequal layers (separate has only some) comes out shallowest first
    panels = {f"{m} - {baseline}": (grid_pivot(cells[cells.method == m]) - base).sort_index(ascending=False)
              for m in methods if m != baseline}
    hatched = None
    if "not_significant" in cells:
        # on each panel's rows: the difference spans both methods' layers, and separate may have only some
        hatched = {f"{m} - {baseline}": cells[cells.method == m].pivot(
            index="layer", columns="dim", values="not_significant").reindex_like(panels[f"{m} - {baseline}"])
            for m in methods if m != baseline}
        title = f"{title}\nhatched: not significant at 95% (paired bootstrap over test pairs and seeds)"
    # cells missing from either grid give NaN; 0.1 keeps the scale valid if all are NaN
    lim = np.nanmax(np.concatenate([np.abs(g.values).ravel() for g in panels.values()] + [[0.1]]))
    return heatmap_panels(panels, f"{title}\ngain over {baseline} per cell (blue: better)",
                          f"Spearman gain over {baseline}", cmap="RdBu", vmin=-lim, vmax=lim,
                          fmt="+.1f", hatched=hatched)  # symmetric limits put white at zero


def fig_gap_cells(rows, title, margin):
    """Each method's mean minus separate per cell (rows: claims.check_every_cell's, with per_cell), hatched where
    the cell fails the claim: its whole 95% interval below the margin."""
    def pivot(r, item):
        return grid_pivot(pd.DataFrame([(n, d, v[item]) for (n, d), v in r["per_cell"].items()],
                                       columns=["layer", "dim", "score"]))
    panels = {r["compared"]: pivot(r, 0) for r in rows}
    hatched = {r["compared"]: pivot(r, 1) == "fails" for r in rows}
    lim = max(np.nanmax(np.abs(p.values)) for p in panels.values())
    return heatmap_panels(panels, f"{title}\nhatched: fails, the whole 95% interval below {margin:+.1f}",
                          "Spearman difference to separate", cmap="RdBu", vmin=-lim, vmax=lim, fmt="+.1f",
                          hatched=hatched)


def fig_sweep(sweep, methods, colors, title):
    """Sweep: each candidate's STS-B dev score on its method's selection target (x: the swept values, in sweep
    order), one line per method, the picked candidate ringed. sweep: rows of method, candidate, score, picked."""
    import matplotlib.pyplot as plt
    candidates = list(dict.fromkeys(sweep.candidate))  # sweep order, as selection.json lists them
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(candidates) + 3.5), 3.8), layout="constrained")
    for method in methods:
        s = sweep[sweep.method == method]
        x = [candidates.index(c) for c in s.candidate]
        ax.plot(x, s.score, marker="o", ms=4, color=colors[method], label=f"{method} ({s.target.iloc[0]})")
        best = s[s.picked]
        ax.scatter([candidates.index(c) for c in best.candidate], best.score, s=160, facecolors="none",
                   edgecolors=colors[method], linewidths=2)
    ax.set_xticks(range(len(candidates)), candidates)
    ax.set_xlabel("swept values (ringed: picked, the highest score on the method's target)")
    ax.set_ylabel("STS-B dev Spearman x100\n(mean over the target's cells)")
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), title="method (selection target)", fontsize=8,
               loc="outside right upper")
    fig.suptitle(title)
    return fig


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
