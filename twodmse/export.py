"""A trained encoder saved in sentence-transformers format: SentenceTransformer(path, truncate_dim=d) loads it.

HF weights + tokenizer + the classic sentence-transformers files (Transformer + Pooling modules; no Normalize
module, so sentence-transformers returns our raw embedding). Loads in sentence-transformers v2 .. v6."""
from pathlib import Path

from . import util


def save_sentence_transformer(model, tokenizer, pooling, max_length, path, heads=None):
    """Write the model folder at path (swapped in whole: a kill never leaves half a model), with the exit heads'
    file when there are heads (backbone.ExitHeads; sentence-transformers ignores it); returns path."""
    return util.atomic_write(path, lambda tmp: _write(model, tokenizer, pooling, max_length, Path(tmp), heads),
                             folder=True)


def _write(model, tokenizer, pooling, max_length, folder, heads=None):
    model.save_pretrained(folder)
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
