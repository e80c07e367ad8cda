"""Report from synthetic cached grids, and the tidy published numbers."""
import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import needs
from twodmse import cli, data, figures, loaders, published_figure, report, stats, tables

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = REPO / "configs" / "published"
SHARED_PUBLISHED = REPO.parent / "shared" / "published"
LAYERS, DIMS = [1, 2, 3], [8, 16, 32]
DATASET_OFFSET = dict(zip(report.STS_TEST, [0.0, -2.0, -4.0, 1.0, -1.0, 2.0, 3.0]))
METHOD_OFFSET = {"baseline": 0.0, "2dmse": 3.0}
SEED_OFFSET = {1: -1.0, 2: 1.0}  # 2dmse has two seeds whose mean cancels out
EXPECTED_ROWS = {"2dmse_reproduce_readme": 384, "starbucks_readme_tableA1": 330,
                 "starbucks_readme_tableA2": 390, "starbucks_retrieval_readme": 1,
                 "st_pr2506_comment": 10, "st_docs_adaptive_layer": 8, "st_docs_matryoshka": 2,
                 "st_release_v2.6.0": 5, "angle_repo_nli_readme": 8, "hf_card_angle_bert_base": 8,
                 "mteb_results_repo": 13}


def score(method, dataset, layer, dim, seed):
    # 2dmse is 3 points better everywhere except the full cell, where it is 2 worse
    bonus = -2.0 if (layer, dim) == (3, 32) and method == "2dmse" else METHOD_OFFSET[method]
    return 40 + 10 * layer + 2 * np.log2(dim) + DATASET_OFFSET[dataset] + bonus + SEED_OFFSET[seed]


def write_grid(path, method, seed):
    rows = [dict(model="tiny", method=method, dataset=ds, split=report.STANDARD_SPLIT.get(ds, "test"), layer=l, dim=d,
                 spearman=score(method, ds, l, d, seed), pearson=0.0, n_pairs=10)
            for ds in report.STS_TEST for l in LAYERS for d in DIMS]
    # SICK-R's own test split and a dev split with absurd scores: the report must ignore them
    rows += [dict(model="tiny", method=method, dataset="sickr", split="test", layer=l, dim=d,
                  spearman=-99.0, pearson=0.0, n_pairs=10) for l in LAYERS for d in DIMS]
    rows += [dict(model="tiny", method=method, dataset="stsb", split="validation", layer=l, dim=d,
                  spearman=-99.0, pearson=0.0, n_pairs=10) for l in LAYERS for d in DIMS]
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    results = root / "results"
    write_grid(results / "tiny-bert" / "baseline" / "seed1" / "grid.csv", "baseline", 1)
    for seed in (1, 2):
        write_grid(results / "tiny-bert" / "2dmse" / f"seed{seed}" / "grid.csv", "2dmse", seed)
    speed = pd.DataFrame([dict(model="org/tiny-bert", layers=l, dim=d, device="cpu", batch_size=32,
                               latency_ms_median=l, throughput_median=1 / l, speedup=3 / l)
                          for l in LAYERS for d in DIMS])
    speed.to_csv(root / "speed.csv", index=False)
    out = root / "figures"
    written, notes = report.make_report(results, out, PUBLISHED, root / "speed.csv")
    return out, written, notes, results


def expected_cells(method, datasets):
    seeds = [1, 2] if method == "2dmse" else [1]
    return {(l, d): np.mean([score(method, ds, l, d, s) for ds in datasets for s in seeds])
            for l in LAYERS for d in DIMS}


def table_row(text, method):
    return next(line for line in text.splitlines() if f"| {method} |" in line)


def test_report_writes_every_figure(made):
    out, written, notes, _ = made
    for kind in ("heatmap", "curves", "gain"):
        for view in ("avg", "stsb"):
            assert (out / f"{kind}_tiny-bert_{view}.png").read_bytes()[:4] == b"\x89PNG"
            assert (out / f"{kind}_tiny-bert_{view}.pdf").read_bytes()[:5] == b"%PDF-"
    for name in ("pareto_tiny-bert_cpu", "published_tiny-bert_avg"):
        assert (out / f"{name}.png").stat().st_size > 10_000
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    assert notes == []
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    assert all(Path(p).exists() for p in written)


@pytest.mark.parametrize("view,datasets", [("avg", report.STS_TEST), ("stsb", ["stsb"])])
def test_summary_tables_hold_the_right_numbers(made, view, datasets):
    out = made[0]
    md = (out / f"summary_{view}.md").read_text()
    tex = (out / f"summary_{view}.tex").read_text()
    base = expected_cells("baseline", datasets)
    for method in ("baseline", "2dmse"):
        cells = expected_cells(method, datasets)
        mean, worst, full = np.mean(list(cells.values())), min(cells.values()), cells[(3, 32)]
        gain = mean - np.mean(list(base.values()))
        row = table_row(md, method)
        cols = [c.strip() for c in row.strip("|").split("|")]
        # backbone, method, seeds, grid mean, seed std, worst, worst at, full, gain
        assert cols[:2] == ["tiny-bert", method]
        assert cols[2] == ("2" if method == "2dmse" else "1")
        assert float(cols[3]) == pytest.approx(mean, abs=0.006)
        assert float(cols[5]) == pytest.approx(worst, abs=0.006)
        assert cols[6] == "(1, 8)"
        assert float(cols[7]) == pytest.approx(full, abs=0.006)
        assert float(cols[8]) == pytest.approx(gain, abs=0.006)
        assert f"{mean:.2f}" in tex and f"{full:.2f}" in tex
    # two seeds offset by -1 and +1 -> std of their grid means is sqrt(2)
    assert float(table_row(md, "2dmse").strip("|").split("|")[4]) == pytest.approx(2 ** 0.5, abs=0.006)


def test_a_method_with_only_some_layers_is_summarised_and_compared_on_its_own_cells():
    """separate trains only some depths (MPNet: 2, 4, ..., 12): its means must not pose as whole-grid means, and its
    gain is against the baseline on its cells, not on the whole grid (layers 1 and 3 are not in it)."""
    layers = {"baseline": [1, 2, 3, 4], "separate": [2, 4]}
    rows = [dict(method=m, seed=1, layer=n, dim=d, spearman=10.0 * n + (5.0 if m == "separate" else 0.0))
            for m in layers for n in layers[m] for d in DIMS]
    per_seed = pd.DataFrame(rows)
    cells = per_seed.groupby(["method", "layer", "dim"], as_index=False).agg(
        score=("spearman", "mean"), seeds=("seed", "nunique"))
    table = tables.summary_table(cells, per_seed, "baseline").set_index("method")
    assert table.loc["separate", "grid mean"] == 35.0 and table.loc["baseline", "grid mean"] == 25.0
    assert table.loc["separate", "gain vs baseline"] == 5.0  # 35 - 30 on its cells, not 35 - 25 over the whole grid
    assert list(table["layers"]) == ["all", "2, 4"]
    rng = np.random.default_rng(0)
    boots = {(m, 1): {"layers": np.array(n), "dims": np.array(DIMS), "spearman": rng.normal(size=(50, len(n), 3))}
             for m, n in layers.items()}
    backbones = tables.backbone_table(tables.backbone_rows(per_seed, boots, "tiny"))
    # every cell and the lower half (layers up to 2: only layer 2 of separate's) are marked, (L, H) is not
    assert re.search(r"^\| separate \| [^|]* \* \| [^|*]* \| [^|]* \* \| 1 \|$", backbones, re.M), backbones
    assert "* tiny, separate: cells at layers 2, 4 only" in backbones
    assert "*" not in table_row(backbones, "baseline")


def test_the_gain_figure_draws_a_method_with_only_some_layers():
    """Its difference to a full grid spans every layer (NaN where it has none), and the hatching follows it there."""
    cells = pd.DataFrame([dict(method=m, layer=n, dim=d, score=10.0 * n, not_significant=n == 4)
                          for m, layers in (("baseline", [1, 2, 3, 4]), ("separate", [2, 4]))
                          for n in layers for d in DIMS])
    fig = figures.fig_gain(cells, ["baseline", "separate"], "baseline", "tiny")
    hatches = [p for p in fig.axes[0].patches if p.get_hatch()]
    assert len(hatches) == len(DIMS) and {p.get_y() for p in hatches} == {-0.5}  # layer 4, the top row
    assert len(fig.axes[0].texts) == 2 * len(DIMS)  # layers 1 and 3 are blank


def test_command_line_runs_the_report(made, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    report.add_cli(parser.add_subparsers())
    args = parser.parse_args(["report", "--results", str(made[3]), "--out", str(tmp_path),
                              "--published", "", "--formats", "png", "--baseline", "2dmse"])
    assert args.func(args) == 0
    assert "no published CSVs" not in capsys.readouterr().err  # '' means leave them out, quietly
    md = (tmp_path / "summary_stsb.md").read_text()
    assert float(table_row(md, "2dmse").strip("|").split("|")[8]) == 0.0  # gain vs itself
    assert sorted(p.suffix for p in tmp_path.glob("heatmap_*")) == [".png", ".png"]


def test_malformed_grid_names_file_and_column(tmp_path):
    path = tmp_path / "res" / "tiny" / "mrl" / "seed1" / "grid.csv"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"dataset": ["stsb"], "split": ["test"], "layer": [1], "dim": [8],
                  "pearson": [1.0]}).to_csv(path, index=False)
    with pytest.raises(loaders.ReportError, match=re.escape(str(path)) + ".*spearman"):
        report.make_report(tmp_path / "res", tmp_path / "out", published=None)


def test_non_numeric_cell_names_the_line(tmp_path):
    path = tmp_path / "res" / "tiny" / "mrl" / "seed1" / "grid.csv"
    path.parent.mkdir(parents=True)
    path.write_text("dataset,split,layer,dim,spearman\nstsb,test,1,8,50.0\nstsb,test,1,16,oops\n")
    with pytest.raises(loaders.ReportError, match=re.escape(f"{path}:3") + ".*spearman.*oops"):
        loaders.load_grids(tmp_path / "res")


@pytest.mark.parametrize("row, message", [("stsb,test,1,16,150.0", "column 'spearman' is 150.0, not in [-100, 100]"),
                                          ("stsb,test,0,16,50.0", "column 'layer' is 0, not a layer number >= 1"),
                                          ("stsb,test,1,-8,50.0", "column 'dim' is -8, not a width >= 1")])
def test_impossible_values_name_the_line(tmp_path, row, message):
    path = tmp_path / "res" / "tiny" / "mrl" / "seed1" / "grid.csv"
    path.parent.mkdir(parents=True)
    path.write_text(f"dataset,split,layer,dim,spearman\nstsb,test,1,8,50.0\n{row}\n")
    with pytest.raises(loaders.ReportError, match=re.escape(f"{path}:3: {message}")):
        loaders.load_grids(tmp_path / "res")


@pytest.mark.parametrize("damage", ["empty grid", "truncated bootstrap", "not a zip"])
def test_damaged_files_are_one_line(tmp_path, damage):
    run = tmp_path / "res" / "tiny" / "mrl" / "seed1"
    run.mkdir(parents=True)
    (run / "grid.csv").write_text("" if damage == "empty grid" else
                                  "dataset,split,layer,dim,spearman\nstsb,test,1,8,50.0\n")
    if damage != "empty grid":
        stats.save_bootstrap(run / "bootstrap.npz", {"spearman": np.zeros((4, 1, 1), np.float32),
                                                     "layers": np.array([1]), "dims": np.array([8]),
                                                     "datasets": np.array(["stsb-test:10"])})
        data = (run / "bootstrap.npz").read_bytes()
        (run / "bootstrap.npz").write_bytes(data[:len(data) // 2] if damage == "truncated bootstrap" else b"x" * 50)
    with pytest.raises(loaders.ReportError, match="not a grid CSV|not a readable bootstrap file"):
        report.make_report(tmp_path / "res", tmp_path / "out", published=None, formats=["png"])


def test_missing_inputs_give_clear_messages(tmp_path, capsys):
    args = argparse.Namespace(results=str(tmp_path / "nope"), out=str(tmp_path / "o"),
                                     published="", speed=None, baseline=None, formats="png")
    with pytest.raises(loaders.ReportError, match=f"results folder {tmp_path / 'nope'} does not exist"):
        report.run(args)
    assert cli.main(["report", "--results", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert f"results folder {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    (tmp_path / "res" / "flat").mkdir(parents=True)
    (tmp_path / "res" / "flat" / "grid.csv").write_text("x\n")
    with pytest.raises(loaders.ReportError, match=r"found .*flat.*seed<k>/grid\.csv"):
        loaders.load_grids(tmp_path / "res")
    with pytest.raises(loaders.ReportError, match="speed CSV .* does not exist"):
        loaders.load_speed(tmp_path / "speed.csv")


def test_pareto_front_keeps_only_undominated_cells():
    pts = pd.DataFrame({"speedup": [1.0, 2.0, 2.0, 3.0, 4.0], "score": [80, 70, 75, 76, 60]})
    front = figures.pareto_front(pts)
    assert list(zip(front.speedup, front.score)) == [(1.0, 80), (3.0, 76), (4.0, 60)]


# ---------------------------------------------------------------- published numbers

def load_build():
    spec = importlib.util.spec_from_file_location("published_build", PUBLISHED / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_tidy(folder):
    return pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False)
                      for f in sorted(Path(folder).glob("*.csv"))], ignore_index=True)


def check_tidy(df):
    assert df.groupby("source_id").size().to_dict() == EXPECTED_ROWS
    assert df.source_url.str.startswith("https://").all()
    assert (df.method != "").all() and (df.dataset != "").all()
    # value is the published string times the scale, nothing else
    value, published = df.value.astype(float), df.value_published.astype(float)
    assert np.allclose(value, published * df.scale.astype(float))


def test_committed_published_csvs():
    df = read_tidy(PUBLISHED)
    check_tidy(df)
    ielab = df[(df.source_id == "2dmse_reproduce_readme") & (df.layer == "12") & (df.dim == "768")]
    assert set(ielab.metric) == {"pearson_or_spearman"}  # the README/script conflict stays visible
    assert sorted(ielab.variant.unique()) == ["v1", "v2"]
    assert set(ielab.method) == {"bert", "separate", "mrl", "2dmse"}


def test_build_matches_committed(tmp_path):
    if not SHARED_PUBLISHED.is_dir():
        needs.missing(f"no {SHARED_PUBLISHED} (the raw published tables, beside the data mirror) here")
    load_build().build([SHARED_PUBLISHED, PUBLISHED / "sources"], tmp_path)
    fresh = read_tidy(tmp_path)
    check_tidy(fresh)
    pd.testing.assert_frame_equal(fresh, read_tidy(PUBLISHED))


def test_each_backbone_as_released_is_checked_against_mtebs_published_scores(tmp_path):
    # the untrained run's MTEB scores at (L, H) beside the scores of MTEB's results repository for the same model:
    # within 0.1 reads "reproduced"; another cell, another model or a task MTEB has no score for is not compared
    results = tmp_path / "res"
    write_grid(results / "mini" / "baseline" / "seed1" / "grid.csv", "baseline", 1)  # a grid to report on
    pub = loaders.load_published(PUBLISHED)
    theirs = pub[(pub.source_id == "mteb_results_repo") & (pub.backbone == "all-MiniLM-L6-v2")]
    published = dict(zip(theirs.dataset_label, theirs.value))
    mteb = results / "mini" / "untrained" / "seed0" / "mteb"
    mteb.mkdir(parents=True)
    rows = [(f"{task}-local", 6, 384, value / 100 + (0.004 if task == "SICK-R" else 0.0)) for task, value in
            published.items()] + [("STS14-local", 6, 384, 0.75), ("STSBenchmark-local", 5, 384, 0.1)]
    pd.DataFrame(rows, columns=["task", "layer", "dim", "main_score"]).to_csv(mteb / "mteb_scores.csv", index=False)
    (mteb / "mteb_run.json").write_text(json.dumps({"config": {"model": "sentence-transformers/all-MiniLM-L6-v2"}}))
    report.make_report(results, tmp_path / "out", PUBLISHED, formats=("png",))
    table = (tmp_path / "out" / "mteb_published.md").read_text()
    got = dict(re.findall(r"^\| mini \(sentence-transformers/all-MiniLM-L6-v2\) \| (\S+) \| .+? \| (yes|\*\*no\*\*) \|",
                          table, re.M))
    assert got == {**{task: "yes" for task in published}, "SICK-R": "**no**"}  # off by 0.4 point
    assert "STS14" not in got  # MTEB's repository has no all-MiniLM-L6-v2 STS14 file


def test_bf16_runs_are_checked_cell_by_cell_against_the_fp32_seed_spread():
    # baseline's seeds spread by 1 (sd 1 at every cell); baseline-bf16 is +0.5 everywhere but +3 at (3, 32)
    rows = [dict(method=m, seed=s, layer=n, dim=d, spearman=50 + n + s + (0.0 if m == "baseline" else
                                                                           3.0 if (n, d) == (3, 32) else 0.5))
            for m in ("baseline", "baseline-bf16", "2dmse") for s in (-1, 0, 1) for n in LAYERS for d in DIMS]
    got = tables.precision_rows(pd.DataFrame(rows), "tiny")
    assert len(got) == 1  # 2dmse has no bf16 twin
    r = got[0]
    assert (r["variant"], r["method"], r["seeds"], r["cells"], r["outside"]) == ("baseline-bf16", "baseline", [3, 3],
                                                                                 9, 1)
    assert r["worst"] == (3, 32) and r["worst_diff"] == pytest.approx(3.0) and r["worst_sd"] == pytest.approx(1.0)
    assert r["mean"] == pytest.approx((8 * 0.5 + 3.0) / 9)


def test_method_missing_from_one_view_is_left_out_with_a_note(tmp_path):
    results = tmp_path / "res"
    write_grid(results / "tiny" / "baseline" / "seed1" / "grid.csv", "baseline", 1)
    other = results / "tiny" / "2dmse" / "seed1" / "grid.csv"
    write_grid(other, "2dmse", 1)
    df = pd.read_csv(other)
    df[df.dataset != "stsb"].to_csv(other, index=False)  # 2dmse never ran STS-B
    written, notes = report.make_report(results, tmp_path / "out", None, formats=("png",))
    assert any("['2dmse'] have no stsb rows" in n for n in notes)
    stsb = (tmp_path / "out" / "summary_stsb.md").read_text()
    assert "| baseline |" in stsb and "| 2dmse |" not in stsb
    # the average runs over the 6 sets both methods share, named in the caption
    assert "sickr, sts12, sts13, sts14, sts15, sts16)" in (tmp_path / "out" / "summary_avg.md").read_text()
    assert not (tmp_path / "out" / "gain_tiny_stsb.png").exists()  # nothing to compare with
    assert (tmp_path / "out" / "gain_tiny_avg.png").exists()


def test_report_averages_the_seven_sets_of_twodmse_data_and_imports_no_torch():
    assert report.STS_TEST == list(data.EVAL_DATASETS)  # one list, in twodmse.data
    code = "import sys, twodmse.report; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr


@pytest.mark.parametrize("n", [3, 10, 12, 20])
def test_every_method_gets_its_own_colour(n):
    colors = figures.palette([f"method{i}" for i in range(n)])
    assert len(set(colors.values())) == n


def test_default_grid_has_exact_published_twins():
    """With the default widths, MiniLM's cells sit at exactly the (layer/L, dim/H) of the published BERT-base
    tables: every ielab depth and width but 8/768, and Starbucks' six sizes, which are our starbucks diagonal."""
    from twodmse import cells
    grid = pd.DataFrame([(n, d) for n in range(1, 7) for d in cells.default_dims(384)], columns=["layer", "dim"])
    starbucks = [(2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768)]
    assert published_figure.diagonal_twins(grid, {(n / 12, d / 768) for n, d in starbucks}) == \
        cells.starbucks_diagonal(6, cells.default_dims(384))
    ielab_widths = [d / 768 for d in cells.default_dims(768)]
    assert published_figure.has_twin([d / 384 for d in cells.default_dims(384)], ielab_widths).all()
    assert not published_figure.has_twin([8 / 768], [d / 384 for d in cells.default_dims(384)]).any()
    assert published_figure.has_twin([n / 6 for n in range(1, 7)], [n / 12 for n in range(2, 13, 2)]).all()


@pytest.mark.parametrize("layers, width, aligned", [(12, 768, True), (6, 384, False)])
def test_a_bert_base_shaped_backbone_is_drawn_cell_for_cell_beside_the_published_tables(layers, width, aligned):
    """all-mpnet-base-v2 has the published tables' shape (12 x 768): their layer numbers and widths on the axes,
    each of our points with its interval, and what still differs under the title; MiniLM is drawn by fraction."""
    from twodmse import cells as cellsets
    dims = cellsets.default_dims(width)
    cells = pd.DataFrame([dict(method=m, layer=n, dim=d, score=50 + n + np.log2(d), lo=49 + n + np.log2(d),
                               hi=51 + n + np.log2(d)) for m in ("baseline", "2dmse") for n in range(1, layers + 1)
                          for d in dims])
    pub = published_figure.published_for(loaders.load_published(PUBLISHED), "avg")
    colors = figures.palette(["baseline", "2dmse", "starbucks"])
    fig = published_figure.fig_published(cells, pub, ["baseline", "2dmse"], colors, "mpnet", "STS average")
    depth, width, diagonal = fig.axes[:3]
    title = fig._suptitle.get_text()
    if aligned:
        assert [t.get_text() for t in width.get_xticklabels()] == [str(d) for d in sorted(dims)]
        assert list(depth.get_xticks()) == list(range(1, 13)) and depth.get_xlabel() == "layer (of 12)"
        assert "cell for cell" in title and "bert-base-uncased (a raw language model)" in title
        assert "NLI" in title and "STS-B train" in title
        ours = [line for line in depth.get_lines() if line.get_label() == "ours 2dmse: mpnet"][0]
        published_x = {x for line in depth.get_lines() if line.get_label().startswith("published")
                       for x in line.get_xdata()}
        assert published_x and published_x <= set(ours.get_xdata())  # their layers are our layer numbers
        assert len(depth.collections) >= 2  # an interval per method (errorbar line collections)
    else:
        assert "fraction" in depth.get_xlabel() and "cell for cell" not in title
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_sweep_table_names_picks_at_an_end_of_the_swept_values(tmp_path):
    rows = [{"backbone": "b", "method": m, "target": t, "candidate": c, "score": v, "dev_grid_mean": v - 1,
             "picked": c == pick, "settled": False}
            for m, t, pick, values in [("baseline", "top", "lr=3", [1, 2, 3]), ("2dmse", "all", "lr=2", [1, 3, 2])]
            for c, v in zip(["lr=1", "lr=2", "lr=3"], values)]
    report.sweep_outputs(pd.DataFrame(rows), "b", tmp_path, ["png"])
    assert "so the best may lie beyond them: baseline." in (tmp_path / "sweep_b.md").read_text()


def test_sweep_table_shows_each_target_its_scores_and_the_per_depth_picks(tmp_path):
    # selection.json as rule select writes it: baseline picked on (L, H), separate depth by depth
    def candidate(lr, score, grid_mean):
        return {"candidate": f"lr={lr}", "values": {"lr": lr}, "score": score, "dev_grid_mean": grid_mean}

    sweep = tmp_path / "results/b/baseline/sweep"
    sweep.mkdir(parents=True)
    cands = [candidate(1, 80.0, 60.0), candidate(2, 79.0, 66.0)]
    (sweep / "selection.json").write_text(json.dumps({"target": "top", "candidates": cands, "picked": cands[0]}))
    sweep = tmp_path / "results/b/separate/sweep"
    sweep.mkdir(parents=True)
    cands = [candidate(1, {"1": 70.0, "2": 75.0}, 70.0), candidate(2, {"1": 72.0, "2": 74.0}, 71.0)]
    (sweep / "selection.json").write_text(json.dumps({
        "target": "each-depth", "settled": True, "candidates": cands, "picked": cands[0],
        "picked_per_depth": {"1": {**cands[1], "score": 72.5, "margin": 1.5},  # settled: means over all seeds
                             "2": {**cands[0], "score": 75.5, "margin": 0.5}}}))
    sweeps = loaders.load_sweeps(tmp_path / "results")
    report.sweep_outputs(sweeps, "b", tmp_path, ["png"])
    text = (tmp_path / "sweep_b.md").read_text()
    assert "| method | target | picked | pick score | margin | settled | lr=1 | lr=2 |" in text
    assert "| baseline | top | lr=1 | 80.00 | 1.00 | no | 80.00 | 79.00 |" in text  # picked on (L, H), not grid mean
    assert "| separate @1 | each-depth | lr=2 | 72.50 | 1.50 | yes | 70.00 | 72.00 |" in text
    assert "| separate @2 | each-depth | lr=1 | 75.50 | 0.50 | yes | 75.00 | 74.00 |" in text
    assert "top: (L, H); each-depth: (k, H) of each depth k on its own" in text
    assert "| baseline | 60.00 | 66.00 |" in text  # the dev grid means, below

def test_a_second_backbone_gets_every_per_backbone_output_and_its_flipped_verdicts_come_first(tmp_path):
    """"Compare your own backbone": a second backbone in results/ gets its own figures, claims section and columns
    of backbones.md. Made from the committed MiniLM runs (real grids and bootstrap files): 'mine' is MiniLM with
    baseline and 2dmse swapped, so the claims comparing the two flip and must be listed first as such."""
    import shutil
    results = tmp_path / "results"
    for method in ("untrained", "baseline", "2dmse", "mrl"):
        shutil.copytree(REPO / "results" / "minilm" / method, results / "minilm" / method)
    for method, twin in (("untrained", "untrained"), ("baseline", "2dmse"), ("2dmse", "baseline"), ("mrl", "mrl")):
        shutil.copytree(REPO / "results" / "minilm" / twin, results / "mine" / method)
    out = tmp_path / "figures"
    report.make_report(results, out, PUBLISHED, formats=("png",))
    claims_md = (out / "claims.md").read_text()
    for backbone in ("minilm", "mine"):
        for kind in ("heatmap", "curves", "gain"):
            assert (out / f"{kind}_{backbone}_avg.png").stat().st_size > 10_000
        assert f"## {backbone}: mean Spearman over the STS test sets" in claims_md
    flipped = claims_md.split("## Verdicts that differ between backbones", 1)[1].split("\n## ", 1)[0]
    assert claims_md.index("## Verdicts that differ") < claims_md.index("## mine:") < claims_md.index("## minilm:")
    row = next(line for line in flipped.splitlines() if "`2dmse-shallow`" in line)  # columns: mine, minilm
    assert re.search(r"\| \*\*fails\*\* -13\.\d\d \[.*\] \| \*\*holds\*\* \+13\.\d\d \[.*\] \|$", row), row
    table = (out / "backbones.md").read_text()
    assert "| method | mine: every cell | mine: (L, H) | mine: every width of layers 1..L/2 | minilm: every cell" \
        in table
    cells = {m: table_row(table, m).split(" | ") for m in ("baseline", "2dmse")}
    assert cells["baseline"][1] == cells["2dmse"][4] and cells["2dmse"][1] == cells["baseline"][4]  # swapped
    mean, lo, hi = map(float, re.findall(r"[\d.]+", cells["2dmse"][1]))
    assert lo < mean < hi and cells["2dmse"][-1].rstrip(" |") == "3"  # 3 seeds
