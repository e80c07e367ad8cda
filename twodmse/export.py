"""A trained encoder saved in sentence-transformers format: SentenceTransformer(path, truncate_dim=d) loads it;
and `twodmse export`: one (layer, width) cell of it as a standalone sentence-transformers folder.

HF weights + tokenizer + the classic sentence-transformers files (Transformer + Pooling modules; no Normalize
module, so sentence-transformers returns our raw embedding). Loads in sentence-transformers v2 .. v6.

    twodmse export --model runs/full/model --layers 3 --dim 128 --out cell-3x128
    SentenceTransformer("cell-3x128").encode(["a sentence"])   # [1, 128]: the cell's embedding

An exported cell keeps only layers 1..k (the rest are not in the file, so encoding costs k layers), and ends in a
Dense module: layer k's exit head (when the model has one) cut to its first d outputs, or the first d rows of the
identity. sentence-transformers does not store `truncate_dim` in a saved folder, so the cut is part of the model
and no argument is needed to get the cell's width."""
import argparse
import json
from pathlib import Path

from . import util


def save_sentence_transformer(model, tokenizer, pooling, max_length, path, heads=None, source=None):
    """Write the model folder at path (swapped in whole: a kill never leaves half a model), with the exit heads'
    file when there are heads (backbone.ExitHeads; sentence-transformers ignores it); returns path. source: the
    folder the weights were loaded from, whose pooler (which backbone.load drops) is written back."""
    return util.atomic_write(path, lambda tmp: _write(model, tokenizer, pooling, max_length, Path(tmp), heads,
                                                      source), folder=True)


def _write(model, tokenizer, pooling, max_length, folder, heads=None, source=None):
    model.save_pretrained(folder)
    if source is not None:
        _restore_pooler(folder, source)
    if heads is not None:
        heads.save(folder)
    tokenizer.save_pretrained(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    util.write_json(folder / "modules.json", modules)
    util.write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    util.write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": model.config.hidden_size, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False})
    util.write_json(folder / "config_sentence_transformers.json", {
        "__version__": util.versions(), "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})


def _restore_pooler(folder, source):
    """Put the source folder's pooler weights back into folder/model.safetensors.

    backbone.load drops a BERT-like model's pooler (nothing here uses it), so save_pretrained writes none; but
    sentence-transformers and AutoModel load the model with one and print a "pooler MISSING" report that reads like
    an error. The pooler never trains here, so the source's is the trained model's too. Nothing is added when the
    source has no pooler (a model built without one) or the saved weights already hold one."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    saved, sources = folder / "model.safetensors", sorted(Path(source).glob("*.safetensors"))
    if not saved.is_file() or not sources:
        return
    state = load_file(str(saved))
    if any(k.startswith("pooler.") for k in state):
        return
    pooler = {}
    for path in sources:
        with safe_open(str(path), "pt") as f:  # keys may carry the architecture's prefix: bert.pooler.dense.bias
            pooler |= {k[k.index("pooler."):]: f.get_tensor(k) for k in f.keys() if "pooler." in k}
    if pooler:
        save_file({**state, **pooler}, str(saved), metadata={"format": "pt"})


IDENTITY = "torch.nn.modules.linear.Identity"  # sentence-transformers' name of Dense's activation: none


def export_cell(model, layers=None, dim=None, out=None, pooling=None, max_length=None):
    """Write cell (layers, dim) of `model` to `out` as a standalone sentence-transformers folder; returns out.

    layers None: every layer; dim None: the full width."""
    import torch

    from . import backbone
    enc = backbone.load(str(model), pooling=pooling, max_length=max_length, device="cpu", layers=layers)
    k, hidden = enc.num_layers, enc.hidden_size
    dim = dim or hidden
    if not 1 <= dim <= hidden:
        raise util.UserError(f"--dim {dim}: {model} is {hidden} wide; choose a width in 1..{hidden}")
    head = enc.heads.maps[str(k)] if enc.heads is not None and str(k) in enc.heads.maps else None
    if head is not None and enc.heads.kind != "linear":
        raise util.UserError(f"{model}: layer {k}'s exit head is of kind {enc.heads.kind} (x + MLP(LayerNorm(x))), "
                             "which sentence-transformers' modules cannot express; load the cell with "
                             f"twodmse.load({str(model)!r}, layers={k}, dim={dim}) instead")
    weight, bias = (head.weight, head.bias) if head is not None else (torch.eye(hidden), torch.zeros(hidden))
    dense = (weight[:dim].detach().clone(), bias[:dim].detach().clone()) if head is not None or dim < hidden else None

    def write(folder):
        _write(enc.model, enc.tokenizer, enc.pooling, enc.max_length, folder, source=enc.path)
        if dense is not None:
            _write_dense(folder, *dense)
        from .card import cell_card
        util.write_text(folder / "README.md", str(cell_card(str(model), k, dim, head is not None)))
    return util.atomic_write(Path(out), lambda tmp: write(Path(tmp)), folder=True)


def _write_dense(folder, weight, bias):
    """Append a Dense module (no activation) computing weight @ x + bias to a sentence-transformers folder."""
    from safetensors.torch import save_file
    modules = json.loads((folder / "modules.json").read_text())
    path = f"{len(modules)}_Dense"
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": path,
                    "type": "sentence_transformers.models.Dense"})
    util.write_json(folder / "modules.json", modules)
    util.write_json(folder / path / "config.json", {"in_features": weight.shape[1], "out_features": weight.shape[0],
                                                     "bias": True, "activation_function": IDENTITY})
    save_file({"linear.weight": weight.contiguous(), "linear.bias": bias.contiguous()},
              folder / path / "model.safetensors")


def add_cli(subparsers):
    p = subparsers.add_parser(
        "export", help="one (layer, width) cell as a standalone sentence-transformers model",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a trained model folder (or any model id or folder)")
    p.add_argument("--layers", type=util.positive_int, help="keep layers 1..k (default: all)")
    p.add_argument("--dim", type=util.positive_int, help="embedding width d (default: the hidden size)")
    p.add_argument("--out", required=True, help="the folder to write (replaced whole if it exists)")
    p.add_argument("--pooling", choices=["mean", "cls"], help="default: what the model folder declares")
    p.add_argument("--max-length", type=util.positive_int, help="tokens per sentence (default: the model's)")
    p.set_defaults(func=run)


def run(args):
    out = Path(args.out)
    with util.output_lock(out.parent, "--out"):
        export_cell(args.model, args.layers, args.dim, out, args.pooling, args.max_length)
    print(f"wrote {out}: SentenceTransformer({str(out)!r}).encode(...) gives cell "
          f"({args.layers or 'all layers'}, {args.dim or 'full width'})")
