"""MTEB view of the (layer, dim) grid: same numbers as our evaluator, no foreign or stale scores."""
import importlib.metadata
import json

import numpy as np
import pandas as pd
import pytest
import torch

import needs
from twodmse.backbone import make_tiny as make_tiny_bert
from twodmse import backbone, data, evaluate, util

needs.module("mteb", "pip install 'twodmse[mteb]'")  # a skip, or a failure under CI=true (see needs.py)
from twodmse import mteb_eval  # noqa: E402

DIMS = [32, 16, 8]


def _stsb(n):
    needs.embedded_stsb()
    full = data.load_eval("stsb", "test", source="embedded")
    return data.Pairs("stsb", "test", full.s1[:n], full.s2[:n], full.scores[:n], "embedded:test-subset")


def _own_scores(folder, pairs):
    """Our evaluator's spearman / 100 per (layer, dim), straight from embed_all_layers."""
    enc = backbone.load(str(folder))
    e1, e2 = (evaluate.embed_all_layers(enc, s, progress=False) for s in (pairs.s1, pairs.s2))
    return {(r["layer"], r["dim"]): r["spearman"] / 100
            for r in evaluate.grid_scores(e1, e2, pairs.scores, DIMS)}


def _run(folder, pairs, tmp_path, monkeypatch, out="out"):
    monkeypatch.setattr(data, "load_eval", lambda *a, **k: pairs)
    monkeypatch.setattr(data, "available", lambda *a, **k: True)
    df, info = mteb_eval.run(str(folder), ["STSBenchmark"], tmp_path / out, dims=DIMS,
                             cache_dir=tmp_path / "emb", source="local", progress=False)
    return {(r.layer, r.dim): r.main_score for r in df.itertuples()}, df, info


def test_mteb_main_scores_equal_our_evaluator(tiny_bert_and_mpnet, tmp_path, monkeypatch):
    pairs = _stsb(40)
    got, df, info = _run(tiny_bert_and_mpnet, pairs, tmp_path, monkeypatch)
    want = _own_scores(tiny_bert_and_mpnet, pairs)
    assert set(got) == set(want) and len(got) == 3 * len(DIMS)
    for cell, score in want.items():
        assert got[cell] == pytest.approx(score, abs=1e-6), cell
    assert set(df.task) == {"STSBenchmark-local"} and set(df.metric) == {"cosine_spearman"}
    # all 9 cells cost one encode of each MTEB column (sentence1, sentence2), not one per cell
    assert info["encodes"] == 2 and info["model_loaded"]

    # MTEB's own loading API reads every cell back from OUT/results/, equal to our CSV
    csv = pd.read_csv(tmp_path / "out" / "mteb_scores.csv")
    back = mteb_eval.read_results(tmp_path / "out", info["mteb_name"])
    assert back == pytest.approx({(r.task, r.layer, r.dim): r.main_score for r in csv.itertuples()}, abs=1e-9)
    assert len(back) == 3 * len(DIMS)

    # MTEB's own JSON, in its layout, holds the same score
    path = (tmp_path / "out" / "results" / f"twodmse__{tiny_bert_and_mpnet.name}" / info["revision"] / "experiments"
            / "dim_16__layer_2__max_length_128__pooling_mean" / "STSBenchmark-local.json")
    scores = json.loads(path.read_text())["scores"]["test"][0]
    assert scores["main_score"] == pytest.approx(want[2, 16], abs=1e-6)
    assert pd.read_csv(tmp_path / "out" / "mteb_scores.csv").main_score.tolist() == \
        pytest.approx(df.main_score.tolist())

    # a rerun is served from MTEB's results: the model is not even loaded
    got2, _, info2 = _run(tiny_bert_and_mpnet, pairs, tmp_path, monkeypatch)
    assert got2 == got and info2["encodes"] == 0 and not info2["model_loaded"]


def test_local_tasks_reuse_the_embeddings_twodmse_eval_cached(tiny_bert, tmp_path, monkeypatch):
    pairs = _stsb(40)
    monkeypatch.setattr(data, "load_eval", lambda *a, **k: pairs)
    df, _, _ = evaluate.evaluate(str(tiny_bert), ["stsb"], DIMS, cache_dir=tmp_path / "emb", progress=False,
                                 device="cpu")
    got, _, info = _run(tiny_bert, pairs, tmp_path, monkeypatch)
    assert not info["model_loaded"]  # both MTEB columns were served from the evaluator's array
    for r in df.itertuples():
        assert got[r.layer, r.dim] == pytest.approx(r.spearman / 100, abs=1e-6)


def test_checkpoints_with_the_same_folder_name_never_share_scores(tmp_path, monkeypatch):
    a = make_tiny_bert(tmp_path / "a" / "model", seed=0)
    b = make_tiny_bert(tmp_path / "b" / "model", seed=1)
    pairs = _stsb(40)
    got_a, _, info_a = _run(a, pairs, tmp_path, monkeypatch)
    got_b, _, info_b = _run(b, pairs, tmp_path, monkeypatch)  # same results folder, same name
    assert info_a["mteb_name"] == info_b["mteb_name"] == "twodmse/model"
    assert info_a["revision"] != info_b["revision"]
    assert info_b["model_loaded"]  # b was really encoded, not served a's results
    want_a, want_b = _own_scores(a, pairs), _own_scores(b, pairs)
    assert max(abs(want_a[c] - want_b[c]) for c in want_a) > 1e-3  # the test can tell them apart
    for cell in want_b:
        assert got_a[cell] == pytest.approx(want_a[cell], abs=1e-6)
        assert got_b[cell] == pytest.approx(want_b[cell], abs=1e-6)


def test_changed_local_data_is_rescored_not_served_from_cache(tiny_bert, tmp_path, monkeypatch):
    _run(tiny_bert, _stsb(40), tmp_path, monkeypatch)
    fewer = _stsb(30)
    got, _, info = _run(tiny_bert, fewer, tmp_path, monkeypatch)
    assert info["encodes"] == 2
    want = _own_scores(tiny_bert, fewer)
    for cell in want:
        assert got[cell] == pytest.approx(want[cell], abs=1e-6)


def test_cell_encoder_returns_the_slice_of_all_layers(tiny_bert, tmp_path):
    import mteb
    enc = backbone.load(str(tiny_bert))
    store = mteb_eval.AllLayers(None, cache_dir=tmp_path, encoder=enc, progress=False)
    texts = ["a man is playing guitar", "two dogs", "a man is playing guitar", "the child is eating"]
    batches = torch.utils.data.DataLoader([{"text": t} for t in texts], batch_size=3)
    full = evaluate.embed_all_layers(enc, texts, progress=False)
    task = mteb.get_task("STSBenchmark")
    for layer, dim in [(1, 32), (2, 16), (3, 8)]:
        meta = mteb_eval.cell_meta("twodmse/x", store.checkpoint_hash, layer, dim, "mean", 128)
        cell = mteb_eval.make_cell_encoder(store, layer, dim, meta)
        got = cell.encode(batches, task_metadata=task.metadata, hf_split="test", hf_subset="default")
        assert got.shape == (len(texts), dim)
        np.testing.assert_allclose(got, full[layer - 1, :, :dim], atol=1e-6)
    assert store.encodes == 1  # three cells, one encode (the repeated text only once)


def test_offline_skips_hub_only_tasks_with_a_reason(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not util.hub_reachable()
    monkeypatch.setattr(data, "available", lambda *a, **k: False)
    tasks, skipped = mteb_eval.build_tasks(["Banking77Classification", "SICK-R"])
    assert tasks == [] and set(skipped) == {"Banking77Classification", "SICK-R"}
    assert "hub is offline" in skipped["Banking77Classification"]
    with pytest.raises(util.UserError, match="--tasks: .*NoSuchTask"):
        mteb_eval.build_tasks(["NoSuchTask"])
    # online, MTEB's own tasks are used, English subsets only (no network needed to build them)
    monkeypatch.setattr(util, "hub_reachable", lambda: True)
    tasks, skipped = mteb_eval.build_tasks(["STS17", "SciFact"])
    assert [t.metadata.name for t in tasks] == ["STS17", "SciFact"] and not skipped
    assert tasks[0].hf_subsets == ["en-en"]


def test_cli_writes_csv_provenance_and_mteb_json(tiny_bert, tmp_path, monkeypatch):
    from twodmse import cli
    pairs = _stsb(40)
    monkeypatch.setattr(data, "load_eval", lambda *a, **k: pairs)
    monkeypatch.setattr(data, "available", lambda *a, **k: True)
    out = tmp_path / "out"
    assert cli.main(["mteb", "--model", str(tiny_bert), "--tasks", "stsb", "--layers", "3",
                     "--dims", "8", "--out", str(out), "--cache", str(tmp_path / "emb")]) == 0
    df = pd.read_csv(out / "mteb_scores.csv")
    assert list(df.columns) == mteb_eval.CSV_COLUMNS and len(df) == 1
    assert df.main_score[0] == pytest.approx(_own_scores(tiny_bert, pairs)[3, 8], abs=1e-6)
    prov = json.loads((out / "mteb_run.json").read_text())
    assert prov["revision"] == df.revision[0] and prov["versions"]["mteb"] == importlib.metadata.version("mteb")
    assert prov["config"]["dims"] == [8]
    assert len(list((out / "results").rglob("STSBenchmark-local.json"))) == 1


def test_task_lists():
    assert mteb_eval.task_names("default") == list(mteb_eval.LOCAL_STS)
    paper = mteb_eval.task_names("paper")
    assert {"STSBenchmark", "Banking77Classification", "SciFact", "NFCorpus"} <= set(paper)
    assert mteb_eval.task_names("stsb,SICK-R") == ["STSBenchmark", "SICK-R"]
