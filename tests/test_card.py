"""Model cards (twodmse card): parsed back with huggingface_hub, metrics equal to grid.csv, the same every time."""
import shutil
from pathlib import Path

import pandas as pd
import pytest

from twodmse import card, cli

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["2dmse", "separate"])
def run(request, tmp_path):
    """A committed results folder of the study (grid, bootstrap, provenance), copied."""
    source = REPO / "results/minilm" / request.param / "seed42"
    return Path(shutil.copytree(source, tmp_path / "run", ignore=shutil.ignore_patterns("README.md")))


def test_card_parses_and_its_metrics_are_the_grid(run, tmp_path):
    from huggingface_hub import ModelCard
    model = tmp_path / "model"
    model.mkdir()
    assert cli.main(["card", "--run", str(run), "--model", str(model)]) == 0
    loaded = ModelCard.load(run / "README.md")
    assert (model / "README.md").read_text() == (run / "README.md").read_text()
    assert loaded.data.library_name == "sentence-transformers"
    assert loaded.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert {"sentence-similarity", "matryoshka", "2dmse"} <= set(loaded.data.tags)
    grid = pd.read_csv(run / "grid.csv")
    want = {(r.dataset, r.layer, r.dim): round(r.spearman, 4) for r in grid.itertuples()}
    assert card.read_cells(loaded) == pytest.approx(want)  # every set and cell, named so it reads back
    assert len(want) == 7 * 6 * 7


def test_card_renders_the_same_from_the_same_inputs(run):
    assert str(card.build(run)) == str(card.build(run))


def test_card_of_a_folder_without_results_is_one_line(tmp_path, capsys):
    assert cli.main(["card", "--run", str(tmp_path)]) == 2
    assert "no grid.csv; a card is made from a trained run's results folder" in capsys.readouterr().err
