"""speed.py on a tiny random BERT: real truncation, table shape and speedup maths, exact search.

No assertion here depends on how fast anything runs.
"""
import argparse
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import transformers

from twodmse import backbone, cells, cli, speed, util

LAYERS, HIDDEN = 3, 32
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random 3-layer BERT with a word-level vocab covering the built-in sentences."""
    path = tmp_path_factory.mktemp("tiny_bert")
    words = sorted({w for s in speed.FALLBACK_SENTENCES for w in re.findall(r"\w+|[^\w\s]", s.lower())})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}
    transformers.BertTokenizer(vocab=vocab).save_pretrained(path)
    config = transformers.BertConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                                     intermediate_size=37, vocab_size=len(vocab), max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(path)
    return str(path)


def n_params(enc):
    return sum(p.numel() for p in enc.parameters())


def test_truncated_model_has_k_layers_and_equals_hidden_state_k(tiny_model):
    full = backbone.load(tiny_model)
    tok = full.tokenize(speed.FALLBACK_SENTENCES[:4])  # different lengths: padding is exercised
    x = tok["input_ids"], tok["attention_mask"]
    with torch.no_grad():
        every_layer = full(*x)  # [L, B, H]
        for k in range(1, LAYERS):
            cut = backbone.load(tiny_model, layers=k)
            assert len(backbone.transformer_layers(cut.model)) == k
            assert n_params(cut) < n_params(full)
            torch.testing.assert_close(cut.last_layer(*x), every_layer[k - 1], atol=1e-5, rtol=1e-5)


def test_search_returns_true_top10():
    g = torch.Generator().manual_seed(1)
    docs = torch.randn(500, 24, generator=g)
    queries = torch.randn(7, 24, generator=g) * 5  # unnormalised on purpose: search must normalise
    scores, ids = speed.search(queries, torch.nn.functional.normalize(docs, dim=-1))

    d = docs.numpy() / np.linalg.norm(docs.numpy(), axis=1, keepdims=True)
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    cos = q @ d.T
    want = np.argsort(-cos, axis=1)[:, :10]
    np.testing.assert_array_equal(ids.numpy(), want)
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(cos, want, 1), atol=1e-5)


def test_search_with_fewer_docs_than_k():
    g = torch.Generator().manual_seed(2)
    index = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    query = torch.randn(1, 8, generator=g)
    scores, ids = speed.search(query, index)
    cos = (torch.nn.functional.normalize(query, dim=-1) @ index.T)[0]
    assert ids[0].tolist() == torch.argsort(cos, descending=True).tolist()  # all 4, best first
    torch.testing.assert_close(scores[0], cos.sort(descending=True).values)


def test_speed_table_speedups_follow_their_definitions():
    enc = [dict(model="m", dtype="float32", threads=1, batch_size=8, n_docs=10, device="cpu", layers=k,
                latency_ms_median=lat, latency_ms_iqr=0.0, throughput_median=thr, throughput_iqr=0.0)
           for k, lat, thr in [(1, 5.0, 300.0), (2, 10.0, 100.0)]]
    search = [dict(device="cpu", dim=d, search_ms_median=ms, search_ms_iqr=0.0, index_bytes=d * 40)
              for d, ms in [(8, 4.0), (4, 1.0)]]
    df = speed.speed_table(enc, search).set_index(["layers", "dim"])
    assert df.loc[(2, 8), "speedup"] == 1.0
    assert df.loc[(1, 4), "speedup"] == pytest.approx((10 + 4) / (5 + 1))
    assert df.loc[(2, 4), "speedup"] == pytest.approx((10 + 4) / (10 + 1))
    assert df.loc[(1, 8), "encode_speedup"] == pytest.approx(3.0)
    assert df.loc[(2, 4), "search_speedup"] == pytest.approx(4.0)


def test_measure_gives_one_row_per_layer_and_dim(tiny_model):
    df, meta = speed.measure(tiny_model, devices=("cpu",), repeats=1, n_docs=50, batch_size=4,
                             n_latency=2, progress=False)
    dims = cells.default_dims(HIDDEN)
    assert list(df.columns) == speed.COLUMNS
    assert len(df) == LAYERS * len(dims)
    assert set(zip(df.layers, df.dim)) == {(k, d) for k in range(1, LAYERS + 1) for d in dims}
    full = df[(df.layers == LAYERS) & (df.dim == HIDDEN)].iloc[0]
    assert full.speedup == 1.0 and full.encode_speedup == 1.0 and full.search_speedup == 1.0
    assert (df.index_bytes == 50 * df.dim * 4).all()
    timings = ["latency_ms_median", "throughput_median", "search_ms_median"]
    assert np.isfinite(df[timings]).all().all() and (df[timings] > 0).all().all()
    # every speedup is its definition applied to the measured times (module docstring)
    assert np.allclose(df.speedup, (full.latency_ms_median + full.search_ms_median)
                       / (df.latency_ms_median + df.search_ms_median), rtol=1e-12)
    assert np.allclose(df.encode_speedup, df.throughput_median / full.throughput_median, rtol=1e-12)
    assert np.allclose(df.search_speedup, full.search_ms_median / df.search_ms_median, rtol=1e-12)
    # one encode timing per depth and one search timing per width, shared by their cells
    assert (df.groupby("layers").latency_ms_median.nunique() == 1).all()
    assert (df.groupby("dim").search_ms_median.nunique() == 1).all()
    assert (df.model == tiny_model).all() and (df.device == "cpu").all() and (df.dtype == "float32").all()
    assert (df.threads == torch.get_num_threads()).all() and (df.batch_size == 4).all() and (df.n_docs == 50).all()
    assert meta["num_layers"] == LAYERS and meta["hidden_size"] == HIDDEN


def test_measure_always_adds_the_full_reference(tiny_model):
    df, _ = speed.measure(tiny_model, layers=[1], dims=[8], repeats=1, n_docs=20, batch_size=2,
                          n_latency=1, progress=False)
    assert set(zip(df.layers, df.dim)) == {(1, 8), (1, HIDDEN), (LAYERS, 8), (LAYERS, HIDDEN)}
    with pytest.raises(util.UserError, match=rf"--layers: layers \[{LAYERS + 1}\] out of range"):
        speed.measure(tiny_model, layers=[LAYERS + 1], repeats=1, n_docs=20, progress=False)


def test_cli_writes_csv_and_provenance(tiny_model, tmp_path):
    out, threads = tmp_path / "speed", torch.get_num_threads()
    try:
        code = cli.main(["speed", "--model", tiny_model, "--out", str(out), "--device", "cpu",
                         "--layers", "1,3", "--dims", "32,8", "--repeats", "1", "--n-docs", "30",
                         "--batch-size", "2", "--n-latency", "1", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)  # --threads is process-wide; later tests keep the default
    assert code == 0
    df = pd.read_csv(out / "speed.csv")
    assert set(zip(df.layers, df.dim)) == {(1, 32), (1, 8), (3, 32), (3, 8)} and (df.threads == 1).all()
    assert list(df.columns) == speed.COLUMNS and (df.n_docs == 30).all()
    info = json.loads((out / "speed.json").read_text())
    assert info["config"]["n_docs"] == 30 and info["versions"]["torch"] == torch.__version__
    assert info["hardware"]["cpu_count"] == os.cpu_count()


def test_cli_rejects_bad_layer_list(capsys):
    with pytest.raises(SystemExit):
        cli.main(["speed", "--out", "x", "--layers", "1,two"])
    assert "comma-separated integers" in capsys.readouterr().err


def load_train_step():
    """benchmarks/train_step.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_step", REPO / "benchmarks" / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_step_benchmark_times_each_configured_method_as_its_results_folder(tiny_bert, tmp_path):
    bench = load_train_step()
    named, loss = bench.configured(REPO / "configs" / "study.yaml")
    assert "untrained" not in named and named["separate"] == ("separate", False, {}, {})
    assert named["full-heads"] == ("full", "linear", {}, {}) and named["relational"] == ("relational", False, {}, {})
    assert named["relational-heads-llr1.25-ge"] == ("relational", "linear", {}, {"gradient_equilibrium": True})
    assert named["relational-heads-llr1.25-uw"][3] == {"uncertainty_weights": 0.02}
    assert named["relational-heads-llr1.25-pcgrad"][3] == {"pcgrad": True}
    assert named["relational-heads-llr1.25-mlp"][1] == "mlp"
    assert loss == {"cosine_w": 1.0, "ibn_w": 0.0, "angle_w": 0.0, "cosine_tau": 20.0}
    enc = backbone.load(tiny_bert)
    feats = enc.tokenize(["a cat sat", "a dog ran", "the cat", "a dog"])
    batch = {"input_ids": feats["input_ids"], "attention_mask": feats["attention_mask"],
             "labels": torch.tensor([1.0, 3.0]), "k": 2}
    steps = bench.method_steps({m: named[m] for m in ("baseline", "separate", "full-heads")}, enc, batch, 1e-3, loss)
    before = {n: p.clone() for n, p in enc.model.named_parameters()}
    for step in steps.values():
        step(0)
    # each method trains its own copies: the encoder handed in is unchanged
    assert all(torch.equal(p, before[n]) for n, p in enc.model.named_parameters())
    # gradient equilibrium, learned loss weights and mlp heads are on where the config says: the same steps move the
    # copy's weights differently; gradient surgery changes them only where the cells' gradients conflict
    first = []
    for keys, heads in (({}, False), ({"gradient_equilibrium": True}, False), ({"uncertainty_weights": 0.02}, False),
                        ({}, "mlp")):
        step = bench.ours("full", enc, batch, 1e-3, heads, loss=loss, keys=keys)
        step(0)
        step(1)  # Adam's first step is the sign of the gradient, whatever its scale
        first.append(dict(step.encoder.model.named_parameters())["embeddings.word_embeddings.weight"])
    assert not any(torch.allclose(first[0], other) for other in first[1:])
    assert step.encoder.heads.kind == "mlp"
    assert bench.ours("full", enc, batch, 1e-3, loss=loss, keys={"pcgrad": True}).objective.split_top
    times = {"baseline": [0.1, 0.1, 0.1], "separate": [0.3, 0.35, 0.4]}
    bench.write_csv(tmp_path / "train_step.csv", times, argparse.Namespace(config="x"))
    rows = pd.read_csv(tmp_path / "train_step.csv").set_index("method")
    assert rows.relative_to_baseline.to_dict() == pytest.approx({"baseline": 1.0, "separate": 3.5})
    assert json.loads((tmp_path / "train_step.json").read_text())["config"] == {"config": "x"}
