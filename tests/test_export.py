"""`twodmse export`: one (layer, width) cell as a standalone sentence-transformers folder, equal to twodmse's cell."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import needs
from twodmse import cli, export, inference, train, util

SENTENCES = ["a man is playing guitar", "a woman is slicing an onion", "the cat sleeps on the mat",
             "two dogs run through a field", "a child is reading a book"]


def exported(model, layers, dim, out):
    st = needs.module("sentence_transformers", "pip install 'sentence-transformers>=3'")
    args = ["export", "--model", str(model), "--out", str(out)] + (["--layers", str(layers)] if layers else []) \
        + (["--dim", str(dim)] if dim else [])
    assert cli.main(args) == 0
    return st.SentenceTransformer(str(out), device="cpu")


def assert_same_cell(model, layers, dim, out):
    st_model = exported(model, layers, dim, out)
    ours = inference.load_elastic(model, layers=layers, dim=dim).encode(SENTENCES)
    theirs = st_model.encode(SENTENCES, convert_to_numpy=True)
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).max() <= 1e-5
    return st_model


def test_a_cell_of_a_model_with_exit_heads(tiny_bert_and_mpnet, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n"
                             for a, b, s in zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1], [1.0, 2.0, 3.0, 4.0, 5.0])))
    model = train.train({"model": str(tiny_bert_and_mpnet), "train_data": str(pairs), "method": "full", "exit_heads": True,
                         "max_steps": 3, "lr": 1e-2, "batch_size": 4, "device": "cpu", "max_length": 16},
                        tmp_path / "run")
    # trained heads are not the identity, so layer 2's head must be in the export for the embeddings to match
    from safetensors.torch import load_file
    head = load_file(str(model / "exit_heads.safetensors"))["maps.2.weight"]
    assert (head - torch.eye(32)).abs().max() > 1e-3
    assert_same_cell(model, 2, 16, tmp_path / "cell")
    config = json.loads((tmp_path / "cell" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2  # the layers above 2 are not in the folder
    assert not (tmp_path / "cell" / "exit_heads.safetensors").exists()  # folded into the Dense module
    from huggingface_hub import ModelCard
    card = ModelCard.load(tmp_path / "cell" / "README.md")
    assert card.data.library_name == "sentence-transformers" and "2 layers, width 16" in card.text
    assert "layer 2's exit head" in card.text
    # the top layer has no head: full width at full depth is the plain model, with no Dense module
    assert_same_cell(model, None, None, tmp_path / "top")
    assert not any(p.name.endswith("_Dense") for p in (tmp_path / "top").iterdir())


def test_a_cell_with_an_mlp_exit_head_is_refused_with_the_loader_to_use(tiny_bert, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": float(i)}) + "\n"
                             for i, (a, b) in enumerate(zip(SENTENCES, SENTENCES[1:]))))
    model = train.train({"model": str(tiny_bert), "train_data": str(pairs), "method": "full", "exit_heads": "mlp",
                         "max_steps": 1, "batch_size": 4, "device": "cpu", "max_length": 16}, tmp_path / "run")
    with pytest.raises(util.UserError, match=r"layer 2's exit head is of kind mlp .*twodmse.load\(.*layers=2, dim=16\)"):
        export.export_cell(model, 2, 16, tmp_path / "cell")
    assert not (tmp_path / "cell").exists()
    assert_same_cell(model, None, None, tmp_path / "top")  # the top layer has no head: it exports as before


def test_a_cell_of_minilm(tmp_path):
    model = assert_same_cell(needs.minilm(), 3, 128, tmp_path / "cell")
    assert model.encode(["one"]).shape == (1, 128)


def test_a_width_beyond_the_model_is_one_line(tiny_bert, tmp_path, capsys):
    assert cli.main(["export", "--model", str(tiny_bert), "--dim", "999", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("twodmse export: error: --dim 999: ") and "is 32 wide; choose a width in 1..32" in err
    assert not (tmp_path / "x").exists()


def test_layers_must_be_positive(tiny_bert, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["export", "--model", str(tiny_bert), "--layers", "0", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2


def test_a_saved_folder_loads_in_sentence_transformers_without_a_missing_pooler_report(tmp_path, capfd):
    # backbone.load drops MiniLM's pooler; the saved folder gets the source's back, so nothing is MISSING
    st = needs.module("sentence_transformers", "pip install 'sentence-transformers>=3'")
    from safetensors.torch import load_file
    from twodmse import backbone
    from twodmse.export import save_sentence_transformer
    source = needs.minilm()
    enc = backbone.load(str(source))
    folder = save_sentence_transformer(enc.model, enc.tokenizer, enc.pooling, enc.max_length, tmp_path / "m",
                                       source=enc.path)
    want = load_file(str(Path(source) / "model.safetensors"))
    got = load_file(str(folder / "model.safetensors"))
    assert torch.equal(got["pooler.dense.weight"], want["pooler.dense.weight"])
    capfd.readouterr()
    st.SentenceTransformer(str(folder), device="cpu")
    out = capfd.readouterr()
    assert "MISSING" not in out.out + out.err
