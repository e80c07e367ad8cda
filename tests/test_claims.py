"""Computed verdicts (twodmse.claims) on synthetic results in which every outcome appears, through the report."""
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twodmse import cells, claims, loaders, report, stats

LAYERS, DIMS = list(range(1, 7)), cells.default_dims(384)
SEEDS = [42, 43, 44]
NOISE = np.random.default_rng(0).normal(0, 0.5, size=stats.REPLICATES)  # shared by every run: paired


def effect(method, layer, dim):
    """2dmse: +3 at shallow layers, -4 at (6, 384), 0 elsewhere; mrl and starbucks: as 2dmse at layer 6's
    reduced widths (so that comparison is inconclusive)."""
    if method == "2dmse":
        return 3.0 if layer < 6 else (-4.0 if dim == 384 else 0.0)
    if method.endswith("-better"):  # ablations: +3 on layers 1..5, as its parent at layer 6
        return 3.0 if layer < 6 else 0.0
    if method.endswith("-worse"):
        return -8.0
    if method == "close":  # elastic methods against separate (0): +2 everywhere
        return 2.0
    if method == "far":  # +2 everywhere but 4 points short at (1, 384)
        return -4.0 if (layer, dim) == (1, 384) else 2.0
    return 0.0


def write_run(results, method, seed, boot=True, layers=LAYERS):
    run = results / "minilm" / method / f"seed{seed}"
    run.mkdir(parents=True)
    offset = {42: -1.0, 43: 0.0, 44: 1.0}[seed]  # seeds spread by 1 point
    points = np.array([[50 + 4 * n + np.log2(d) + effect(method, n, d) + offset for d in DIMS] for n in layers])
    rows = [dict(dataset=ds, split=report.STANDARD_SPLIT.get(ds, "test"), layer=n, dim=d, spearman=points[i, j] + k - 3)
            for k, ds in enumerate(report.STS_TEST) for i, n in enumerate(layers) for j, d in enumerate(DIMS)]
    pd.DataFrame(rows).to_csv(run / "grid.csv", index=False)  # dataset offsets -3..+3 average to 0
    if boot:
        stats.save_bootstrap(run / "bootstrap.npz", {
            "spearman": (points[None] + NOISE[:, None, None]).astype(np.float32), "layers": np.array(layers),
            "dims": np.array(DIMS), "datasets": np.array([f"{d}-{report.STANDARD_SPLIT.get(d, 'test')}:100"
                                                          for d in report.STS_TEST])})


def write_speed(results, slowdown=0.95, iqr=0.01):
    rows = [dict(model="m", layers=k, dim=d, device="cpu", dtype="float32", batch_size=128, speedup=6 / k,
                 encode_speedup=slowdown * 6 / k if k < 6 else 1.0, throughput_median=100 * 6 / k,
                 throughput_iqr=iqr * 100 * 6 / k) for k in LAYERS for d in DIMS]
    (results / "minilm" / "speed").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(results / "minilm" / "speed" / "speed.csv", index=False)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    results = tmp_path_factory.mktemp("claims") / "results"
    for method in ("baseline", "2dmse", "mrl"):
        for seed in SEEDS:
            write_run(results, method, seed)
    write_run(results, "starbucks", 42, boot=False)  # no replicates: not checked
    write_speed(results)
    return results


def verdicts(text):
    return dict(re.findall(r"^\| (.+?) \| .+? \| \*\*(.+?)\*\* \|", text, re.M))


def test_every_outcome_through_the_report(results, tmp_path):
    report.make_report(results, tmp_path, published=None, formats=["png"])
    got = verdicts((tmp_path / "claims.md").read_text())
    want = {"2dmse-shallow": "holds", "2dmse-top": "fails", "2dmse-vs-mrl": "inconclusive",
            "separate-vs-2dmse": "not run", "starbucks-diagonal": "not checked", "2dmse-vs-st": "not run",
            "2dmse-vs-st-shallow": "not run", "speed-layers": "holds",
            "elastic-every-cell": "not run"}  # no sweep to pick the best elastic method, no separate
    assert got == {c["claim"]: want[c["id"]] for c in claims.CLAIMS + [claims.SPEED_CLAIM, claims.ELASTIC_CLAIM]}


def test_numbers_and_test_text(results):
    grid = loaders.load_grids(results)
    _, per_seed, datasets = report.cell_scores(grid, "minilm", "avg")
    boots = report.view_bootstraps(loaders.load_bootstraps(results), "minilm", datasets)
    rows = {r["id"]: r for r in claims.check_all(per_seed, boots)}
    top = rows["2dmse-top"]
    # -4 exactly; the interval: seed spread s = 1 on both sides (s^2/3 each, 2 df each: Welch-Satterthwaite df 4)
    # and no bootstrap spread (the noise is shared, so the paired difference has none)
    assert top["diff"] == pytest.approx(-4.0) and top["df"] == pytest.approx(4)
    assert top["hi"] == pytest.approx(-4 + 2.776445 * np.sqrt(2 / 3)) and "(t, df 4.0)" in top["test"]
    assert "(6,384)" in top["cells"] and "3 vs 3 seed(s)" in top["test"]
    assert rows["2dmse-shallow"]["cells"].endswith("35 cells")
    assert "bootstrap.npz" in rows["starbucks-diagonal"]["test"]


def test_separate_trained_at_some_depths_is_compared_on_those_depths(tmp_path):
    # separate with method_options.depths (the published tables' rows): claims use the cells both sides have, and
    # the report draws its gaps
    results = tmp_path / "results"
    for seed in SEEDS:
        write_run(results, "2dmse", seed)
        write_run(results, "separate", seed, layers=[2, 4, 6])
    report.make_report(results, tmp_path / "fig", published=None, formats=["png"])
    grid = loaders.load_grids(results)
    _, per_seed, datasets = report.cell_scores(grid, "minilm", "avg")
    boots = report.view_bootstraps(loaders.load_bootstraps(results), "minilm", datasets)
    row = {r["id"]: r for r in claims.check_all(per_seed, boots)}["separate-vs-2dmse"]
    assert row["cells"].endswith("(2,384) (4,384)") and row["diff"] == pytest.approx(-3.0)
    assert row["verdict"] == "fails"
    every = claims.check_each_against_separate(per_seed, boots, ["2dmse"])[0]
    assert every["cells"] == f"every cell, {3 * len(DIMS)} cells, each tested alone"
    assert every["worst_cell"] == (6, 384) and every["verdict"] == "fails"


def test_intervals_and_significance_marks(results):
    grid = loaders.load_grids(results)
    c, per_seed, datasets = report.cell_scores(grid, "minilm", "avg")
    boots = report.view_bootstraps(loaders.load_bootstraps(results), "minilm", datasets)
    c = report.with_intervals(c, per_seed, boots, "baseline").set_index(["method", "layer", "dim"])
    has = c.lo.notna()
    assert has.sum() == 3 * len(LAYERS) * len(DIMS) and ((c.lo < c.score) & (c.score < c.hi))[has].all()
    assert not c.loc[("2dmse", 1, 384), "not_significant"]  # +3: significant
    assert c.loc[("mrl", 6, 8), "not_significant"]  # equal: not significant
    assert c.loc["starbucks"].lo.isna().all()  # no replicates, no whiskers


@pytest.mark.parametrize("slowdown, iqr, want", [(0.95, 0.01, "holds"), (0.5, 0.01, "fails"),
                                                 (0.8, 0.05, "inconclusive")])
def test_speed_claim(tmp_path, slowdown, iqr, want):
    write_speed(tmp_path, slowdown, iqr)
    speed = pd.read_csv(tmp_path / "minilm" / "speed" / "speed.csv")
    row = claims.check_speed(speed[speed.dim == 384], 6)
    assert row["verdict"] == want and row["diff"] == pytest.approx(slowdown)


def test_ablations_against_their_parent_folder(tmp_path):
    results = tmp_path / "results"
    for method in ("baseline", "baseline-better", "baseline-better-worse"):
        for seed in SEEDS:
            write_run(results, method, seed)
    assert claims.parent_of("baseline-better-worse", ["baseline", "baseline-better"]) == "baseline-better"
    assert claims.parent_of("st-matryoshka2d", ["baseline", "2dmse"]) is None
    report.make_report(results, tmp_path / "fig", published=None, formats=["png"])
    text = (tmp_path / "fig" / "ablations.md").read_text()
    got = re.findall(r"^\| (\S+ - \S+) \| (.+?) \| \*\*(.+?)\*\* \|", text, re.M)
    assert got == [("baseline-better - baseline", "every cell", "better"),
                   ("baseline-better - baseline", "every width of layers 1..L-1", "better"),
                   ("baseline-better - baseline", "(L, H)", "inconclusive"),  # +0, seed spread only
                   ("baseline-better-worse - baseline-better", "every cell", "worse"),
                   ("baseline-better-worse - baseline-better", "every width of layers 1..L-1", "worse"),
                   ("baseline-better-worse - baseline-better", "(L, H)", "worse")]


def test_no_ablations_file_without_a_variant(results, tmp_path):
    report.make_report(results, tmp_path, published=None, formats=["png"])
    assert not (tmp_path / "ablations.md").exists()
    assert not list(tmp_path.glob("gap_separate_*"))  # no separate run either


def test_gap_to_separate_is_drawn_with_its_significance(tmp_path):
    results = tmp_path / "results"
    for method in ("baseline", "2dmse", "separate"):
        write_run(results, method, 42)
    grid = loaders.load_grids(results)
    cells, per_seed, datasets = report.cell_scores(grid, "minilm", "avg")
    boots = report.view_bootstraps(loaders.load_bootstraps(results), "minilm", datasets)
    gap = report.with_intervals(cells, per_seed, boots, "separate").set_index(["method", "layer", "dim"])
    assert not gap.loc[("2dmse", 1, 384), "not_significant"] and gap.loc[("baseline", 1, 384), "not_significant"]
    written, _ = report.make_report(results, tmp_path / "fig", published=None, formats=["png"])
    assert {"gap_separate_minilm_avg.png", "gap_separate_minilm_stsb.png"} <= {Path(p).name for p in written}


def test_a_one_seed_ablation_is_paired_with_its_parent_at_that_seed(tmp_path):
    results = tmp_path / "results"
    for seed in SEEDS:
        write_run(results, "baseline", seed)
    write_run(results, "baseline-better", 42)
    write_run(results, "baseline-worse", 43)
    grid = loaders.load_grids(results)
    _, per_seed, datasets = report.cell_scores(grid, "minilm", "avg")
    boots = report.view_bootstraps(loaders.load_bootstraps(results), "minilm", datasets)
    rows = {r["id"]: r for r in claims.check_ablations(per_seed, boots)}
    # against baseline's seed-42 run (not its 3-seed mean): exactly +3; seed spread: baseline's seeds (variance 1,
    # 2 df) on both sides, the paired bootstrap adds nothing (shared noise)
    shallow = rows["baseline-better/shallow"]
    assert shallow["diff"] == pytest.approx(3.0) and shallow["df"] == pytest.approx(2)
    assert shallow["hi"] == pytest.approx(3 + 4.302653 * np.sqrt(2))
    assert shallow["verdict"] == "inconclusive" and "(seed 42), seed spread of each side from baseline's 3" \
        in shallow["test"]
    assert rows["baseline-worse/all"]["verdict"] == "fails" and rows["baseline-worse/all"]["diff"] == \
        pytest.approx(-8.0)
    assert rows["baseline-better/top"]["diff"] == pytest.approx(0.0)


def write_sweep(results, method, dev_gap):
    """A sweep of one candidate, picked, whose STS-B dev grid is separate's plus dev_gap, 3 points less at (2, 64)."""
    folder = results / "minilm" / method / "sweep"
    (folder / "lr=1e-4" / "seed42").mkdir(parents=True)
    gap = 0.0 if method == "separate" else dev_gap
    dip = 3.0 if method != "separate" else 0.0
    rows = [dict(dataset="stsb", split="dev", layer=n, dim=d, spearman=60 + n + gap - dip * ((n, d) == (2, 64)))
            for n in LAYERS for d in DIMS]
    pd.DataFrame(rows).to_csv(folder / "lr=1e-4" / "seed42" / "grid.csv", index=False)
    pick = {"candidate": "lr=1e-4", "dev_grid_mean": 70.0, "values": {"lr": 1e-4}}
    (folder / "selection.json").write_text(json.dumps({"candidates": [pick], "picked": pick}))


@pytest.mark.parametrize("dev_pick, verdict, worst", [("far", "fails", -4.0), ("close", "holds", 2.0)])
def test_the_best_elastic_method_is_picked_on_dev_and_tested_in_every_cell(tmp_path, dev_pick, verdict, worst):
    results = tmp_path / "results"
    for method in ("separate", "close", "far"):
        for seed in SEEDS:
            write_run(results, method, seed)
        write_sweep(results, method, dev_gap=1.0 if method == dev_pick else -0.5)  # dev worst: -2 vs -3.5
    written, _ = report.make_report(results, tmp_path / "fig", published=None, formats=["png"])
    assert {"depth_minilm_avg.png", "gap_cells_minilm_avg.png"} <= {Path(p).name for p in written}
    text = (tmp_path / "fig" / "claims.md").read_text()
    claim = f"{claims.ELASTIC_CLAIM['claim']}: {dev_pick}, picked on STS-B dev as the closest to separate in its " \
            "worst cell (-2.00 at (2,64))"
    assert verdicts(text)[claim] == verdict
    grid = loaders.load_grids(results)
    _, per_seed, datasets = report.cell_scores(grid, "minilm", "avg")
    boots = report.view_bootstraps(loaders.load_bootstraps(results), "minilm", datasets)
    row = claims.check_elastic(per_seed, boots, loaders.load_dev_picks(results, "minilm", loaders.load_sweeps(results)))
    # the worst cell's difference; its interval: the seed spread alone (shared bootstrap noise), as in
    # test_numbers_and_test_text
    assert row["diff"] == pytest.approx(worst) and row["hi"] == pytest.approx(worst + 2.776445 * np.sqrt(2 / 3))
    assert row["counts"] == ("41 / 0 / 1" if dev_pick == "far" else "42 / 0 / 0")  # hold / inconclusive / fail
    failing = {c: diff for c, (diff, v) in row["per_cell"].items() if v == "fails"}
    assert len(row["per_cell"]) == 42 and failing == ({(1, 384): pytest.approx(-4.0)} if dev_pick == "far" else {})
    # every method against separate, picked or not
    table = re.findall(r"^\| (\S+) - separate \| \*\*(.+?)\*\* \| (\(\d,\d+\)) ([-+.\d]+)", text, re.M)
    assert [t[:2] for t in table] == [("close", "holds"), ("far", "fails")]
    assert table[0][3] == "+2.00" and table[1][2:] == ("(1,384)", "-4.00")


def test_the_gap_figure_draws_a_method_its_parent_and_its_variants_and_hatches_the_failing_cells():
    import matplotlib
    matplotlib.use("Agg")
    from twodmse.figures import fig_gap_cells
    names = ["a", "a-x", "a-x-y", "a-x-z", "b"]
    assert claims.family("a-x", names) == ["a-x", "a", "a-x-y", "a-x-z"]
    assert claims.family("b", names) == ["b"]
    rows = [{"compared": f"{m} - separate", "per_cell": {(n, d): (-2.0 if (m, n, d) == ("a", 1, 8) else 0.5,
                                                                "fails" if (m, n, d) == ("a", 1, 8) else "holds")
                                                         for n in (1, 2) for d in (8, 16)}} for m in ("a", "a-x")]
    fig = fig_gap_cells(rows, "t", -1.0)
    hatches = [[p.get_xy() for p in ax.patches if p.get_hatch()] for ax in fig.axes if ax.get_title()]
    assert hatches == [[(-0.5, 0.5)], []]  # a's (1, 8): row 1 (layer 2 drawn on top), column 0
    assert [t.get_text() for t in fig.axes[0].texts].count("-2.0") == 1


def test_no_best_elastic_method_without_separates_sweep():
    dev = pd.DataFrame([dict(method=m, layer=1, dim=8, spearman=50.0) for m in ("full", "2dmse")])
    assert claims.best_elastic(dev) is None and claims.best_elastic(None) is None
    dev = pd.concat([dev, pd.DataFrame([dict(method="separate", layer=1, dim=8, spearman=51.0)])])
    assert claims.best_elastic(dev) == ("2dmse", -1.0, (1, 8))  # a tie: the first in column order


def test_depth_figure_draws_the_training_cost_and_names_a_bad_cost_file(tmp_path):
    results = tmp_path / "results"
    for method in ("baseline", "separate"):
        write_run(results, method, 42)
    cost = results / "minilm" / loaders.TRAIN_COST
    cost.parent.mkdir(parents=True)
    cost.write_text("method,ms_median,ms_q1,ms_q3,relative_to_baseline\nbaseline,100,90,110,1.0\n"
                    "separate,350,340,360,3.5\n")
    written, notes = report.make_report(results, tmp_path / "fig", published=None, formats=["png"])
    assert "depth_minilm_avg.png" in {Path(p).name for p in written} and not any("train_step" in n for n in notes)
    cost.write_text("method,ms\nbaseline,100\n")
    with pytest.raises(loaders.ReportError, match=r"train_step.csv: missing column.*rerun benchmarks/train_step.py"):
        report.make_report(results, tmp_path / "fig", published=None, formats=["png"])
