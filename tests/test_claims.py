"""Computed verdicts (twodmse.claims) on synthetic results in which every outcome appears, through the report."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twodmse import cells, claims, report, stats

LAYERS, DIMS = list(range(1, 7)), cells.default_dims(384)
SEEDS = [42, 43, 44]
NOISE = np.random.default_rng(0).normal(0, 0.5, size=stats.REPLICATES)  # shared by every run: paired


def effect(method, layer, dim):
    """2dmse: +3 at shallow layers, -3 at (6, 384), 0 elsewhere; mrl and starbucks: as 2dmse at layer 6's
    reduced widths (so that comparison is inconclusive)."""
    if method == "2dmse":
        return 3.0 if layer < 6 else (-3.0 if dim == 384 else 0.0)
    if method.endswith("-better"):  # ablations: +2 on layers 1..5, as its parent at layer 6
        return 2.0 if layer < 6 else 0.0
    if method.endswith("-worse"):
        return -3.0
    return 0.0


def write_run(results, method, seed, boot=True):
    run = results / "minilm" / method / f"seed{seed}"
    run.mkdir(parents=True)
    offset = {42: -1.0, 43: 0.0, 44: 1.0}[seed]  # seeds spread by 1 point
    points = np.array([[50 + 4 * n + np.log2(d) + effect(method, n, d) + offset for d in DIMS] for n in LAYERS])
    rows = [dict(dataset=ds, split=report.STANDARD_SPLIT.get(ds, "test"), layer=n, dim=d, spearman=points[i, j] + k - 3)
            for k, ds in enumerate(report.STS_TEST) for i, n in enumerate(LAYERS) for j, d in enumerate(DIMS)]
    pd.DataFrame(rows).to_csv(run / "grid.csv", index=False)  # dataset offsets -3..+3 average to 0
    if boot:
        stats.save_bootstrap(run / "bootstrap.npz", {
            "spearman": (points[None] + NOISE[:, None, None]).astype(np.float32), "layers": np.array(LAYERS),
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
    want = {"2dmse-shallow": "holds", "2dmse-top": "fails", "2dmse-top-separate": "not run", "2dmse-vs-mrl": "inconclusive",
            "separate-vs-2dmse": "not run", "starbucks-diagonal": "not checked", "speed-layers": "holds"}
    assert got == {c["claim"]: want[c["id"]] for c in claims.CLAIMS + [claims.SPEED_CLAIM]}


def test_numbers_and_test_text(results):
    grid = report.load_grids(results)
    _, per_seed, datasets = report.cell_scores(grid, "minilm", "avg")
    boots = report.view_bootstraps(report.load_bootstraps(results), "minilm", datasets)
    rows = {r["id"]: r for r in claims.check_all(per_seed, boots)}
    top = rows["2dmse-top"]
    # -3 exactly; the interval: seed spread s = 1 on both sides (s^2/3 each) and no bootstrap spread (the noise
    # is shared, so the paired difference has none)
    assert top["diff"] == pytest.approx(-3.0) and top["hi"] == pytest.approx(-3 + stats.Z * np.sqrt(2 / 3))
    assert "(6,384)" in top["cells"] and "3 vs 3 seed(s)" in top["test"]
    assert rows["2dmse-shallow"]["cells"].endswith("35 cells")
    assert "bootstrap.npz" in rows["starbucks-diagonal"]["test"]


def test_intervals_and_significance_marks(results):
    grid = report.load_grids(results)
    c, per_seed, datasets = report.cell_scores(grid, "minilm", "avg")
    boots = report.view_bootstraps(report.load_bootstraps(results), "minilm", datasets)
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
    grid = report.load_grids(results)
    cells, per_seed, datasets = report.cell_scores(grid, "minilm", "avg")
    boots = report.view_bootstraps(report.load_bootstraps(results), "minilm", datasets)
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
    grid = report.load_grids(results)
    _, per_seed, datasets = report.cell_scores(grid, "minilm", "avg")
    boots = report.view_bootstraps(report.load_bootstraps(results), "minilm", datasets)
    rows = {r["id"]: r for r in claims.check_ablations(per_seed, boots)}
    # against baseline's seed-42 run (not its 3-seed mean): exactly +2; seed spread: baseline's seeds (variance 1)
    # on both sides, the paired bootstrap adds nothing (shared noise)
    shallow = rows["baseline-better/shallow"]
    assert shallow["diff"] == pytest.approx(2.0) and shallow["hi"] == pytest.approx(2 + stats.Z * np.sqrt(2))
    assert shallow["verdict"] == "inconclusive" and "(seed 42), seed spread of each side from baseline's 3" \
        in shallow["test"]
    assert rows["baseline-worse/all"]["verdict"] == "fails" and rows["baseline-worse/all"]["diff"] == \
        pytest.approx(-3.0)
    assert rows["baseline-better/top"]["diff"] == pytest.approx(0.0)
