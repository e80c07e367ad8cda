"""The figure of ours next to published numbers (`twodmse report`: published_<backbone>_<view>): frames in, a figure
out.

The published tables (twodmse/published/*.csv: ielab's 2DMSE reproduction, Starbucks' Table A1) are all on
BERT-base, 12 layers x 768. A backbone of another shape is drawn by fraction of depth (layer / L) and of width
(dim / H), filled markers where a published cell has the same fractions. A backbone of exactly that shape
(all-mpnet-base-v2) is drawn cell for cell: the same layer numbers and widths on the axes, our 95% interval on
each of our points, and, under the plot, what still differs between their runs and ours, so that nobody reads it as
a like-for-like race.
"""
import textwrap

import numpy as np

PUBLISHED_METHODS = {"2dmse", "starbucks"}  # the published lines drawn next to ours
# our methods drawn next to them: the same families plus the baseline, for reference
COMPARED_PREFIXES = ("baseline", "2dmse", "starbucks", "st-matryoshka2d")


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


def has_twin(ours, published):
    """For each of our fractions (layer/L or dim/H, or pairs of both), whether a published cell has exactly it."""
    pub = {tuple(np.round(np.atleast_1d(f), 9)) for f in published}
    return np.array([tuple(np.round(np.atleast_1d(f), 9)) in pub for f in ours])


def diagonal_twins(cells, fractions):
    """Our (layer, dim) cells at exactly the published (layer/L, dim/H) fractions, in published order."""
    L, H = cells.layer.max(), cells.dim.max()
    ours = {(round(lay / L, 9), round(d / H, 9)): (int(lay), int(d)) for lay, d in zip(cells.layer, cells.dim)}
    return [ours[k] for k in sorted((round(a, 9), round(b, 9)) for a, b in fractions) if k in ours]


def same_shape(cells, pub):
    """Whether our grid has the published backbone's layers and width (then the figure is drawn cell for cell)."""
    shapes = set(zip(pub.num_layers, pub.hidden_size))
    return len(shapes) == 1 and shapes == {(cells.layer.max(), cells.dim.max())}


def differences(pub, backbone):
    """What still differs between the published runs and ours (the aligned figure's footnote)."""
    starts = ", ".join(f"{b} (a raw language model)" if b == "bert-base-uncased" else b
                       for b in sorted(set(pub.backbone)))
    data = "; ".join(sorted(set(pub.train_data)))
    text = (f"Not a like-for-like race. Their start: {starts}; ours: the {backbone} backbone (all-mpnet-base-v2 in "
            f"configs/study-mpnet.yaml, already trained for sentence embeddings). Their training data: {data}; "
            "ours: each run's train_data (STS-B train in the shipped studies). ielab's 2DMSE-Reproduce values may "
            "be Pearson (configs/published).")
    return "\n".join(textwrap.wrap(text, 160))


def _legend_entries(axes):
    """(handles, labels) of all axes, each label once, in order of appearance."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    return handles, labels


def fig_published(cells, pub, methods, colors, backbone, view_name):
    """Ours and published on shared axes: depth at full width, width at full depth, Starbucks' diagonal; by
    fraction of depth and width, or cell for cell when our backbone has the published shape (same_shape)."""
    import matplotlib.pyplot as plt
    L, H = cells.layer.max(), cells.dim.max()
    aligned = same_shape(cells, pub)
    methods = [m for m in methods if m.startswith(COMPARED_PREFIXES)] or methods
    pub = pub[pub.method.isin(PUBLISHED_METHODS)]
    fig, axes = plt.subplots(1, 3, figsize=(17, 6.5 if aligned else 6), sharey=True, layout="constrained")
    styles = iter(["--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 1))] * 4)
    pub_style = {lab: next(styles) for lab in sorted(pub.label.unique())}

    def ours(ax, c, x, method, twin):
        """Our curve with its 95% interval; filled markers where a published cell has the same (layer/L, dim/H),
        hollow elsewhere."""
        x, y = np.asarray(x), np.asarray(c.score)
        line, = ax.plot(x, y, lw=2, color=colors[method], label=f"ours {method}: {backbone}")
        if "lo" in c:
            ax.errorbar(x, y, yerr=[y - np.asarray(c.lo), np.asarray(c.hi) - y], fmt="none", capsize=2, lw=1,
                        color=line.get_color())
        ax.plot(x[twin], y[twin], "o", ms=5, color=line.get_color())
        ax.plot(x[~twin], y[~twin], "o", ms=5, mfc="white", color=line.get_color())

    def twin_note(ax, twin):
        ax.text(0.02, 0.02, f"{twin.sum()} of {len(twin)} of our cells have a published twin (filled)",
                transform=ax.transAxes, fontsize=8, color="0.3")

    def theirs(ax, p, x):
        if p.empty:
            ax.text(0.5, 0.02, "no published values for this dataset", transform=ax.transAxes,
                    ha="center", fontsize=8, color="grey")
        for lab, q in p.groupby("label"):
            ax.plot(x(q), q.value, ls=pub_style[lab], marker="s", mfc="none", ms=5,
                    color=colors.get(q.method.iloc[0], "grey"), label=lab)

    # depth at full width, then width at full depth: (axis varied, its size, the one held full, published match)
    for ax, (vary, size, held, pub_full) in zip(axes, [("layer", L, "dim", pub.dim == pub.hidden_size),
                                                        ("dim", H, "layer", pub.layer == pub.num_layers)]):
        p = pub[pub_full & pub.source_id.str.startswith("2dmse")]
        scale = 1 if aligned else size  # cell for cell: layer numbers and widths themselves
        for m in methods:
            c = cells[(cells.method == m) & (cells[held] == cells[held].max())].sort_values(vary)
            twin = has_twin(c[vary] / size, p[f"{vary}_frac"])
            ours(ax, c, c[vary] / scale, m, twin)
        twin_note(ax, twin)
        theirs(ax, p.sort_values(vary), lambda q, v=vary, s=scale: q[v] / s if aligned else q[f"{v}_frac"])
    axes[1].set_xscale("log", base=2)
    if aligned:
        axes[0].set(title=f"depth at full width (d={H})", xlabel=f"layer (of {L})",
                    xticks=sorted(set(cells.layer)))
        axes[1].set(title=f"width at full depth (layer {L})", xlabel="width (dims kept, log scale)")
        axes[1].set_xticks(sorted(set(cells.dim)), [str(d) for d in sorted(set(cells.dim))])
    else:
        axes[0].set(title="depth at full width", xlabel="fraction of layers used (layer / L)")
        axes[1].set(title="width at full depth", xlabel="fraction of dims kept (dim / H, log scale)")
    axes[0].set_ylabel(f"{view_name} Spearman x100")

    ax = axes[2]  # Starbucks diagonal: depth and width shrink together
    p = pub[pub.source_id == "starbucks_readme_tableA1"].sort_values("layer")
    if not p.empty:
        picked = diagonal_twins(cells, set(zip(p.layer_frac, p.dim_frac)))
        for m in methods:
            at = cells[cells.method == m].set_index(["layer", "dim"]).reindex(picked)  # NaN where we lack it
            ours(ax, at, [lay / L for lay, _ in picked], m, np.ones(len(picked), bool))
        ax.text(0.02, 0.02, f"{len(picked)} of {p.layer.nunique()} published sizes have an exact twin in our grid",
                transform=ax.transAxes, fontsize=8, color="0.3")
        theirs(ax, p, lambda q: q.layer_frac)
        ax.set_xticks([lay / L for lay, _ in picked],
                      [f"{lay}/{L}\nd={d}" for lay, d in picked], fontsize=7)
    ax.set(title="Starbucks diagonal" + (" (the same layer and width)" if aligned else
                                         " (ours: the same layer/L, dim/H)"),
           xlabel="layer and width" if aligned else "fraction of layers used; published dims 32..768 of 768")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.legend(*_legend_entries(axes), loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    if aligned:
        fig.suptitle(f"Ours ({backbone}, L={L}, H={H}) next to published numbers, cell for cell (BERT-base, the "
                     f"same shape); {view_name}\n{differences(pub, backbone)}", fontsize=10)
    else:
        fig.suptitle(f"Ours ({backbone}, L={L}, H={H}) next to published numbers "
                     f"(BERT-base backbones, L=12, H=768); {view_name}")
    return fig
