import os

import pytest

# Tests never touch the network: the hub is unreachable here and in CI.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("a the man woman dog cat is are playing guitar piano running on in with and of to "
         "plane taking off child eating food car driving road two people sitting bench ball").split()


def make_tiny_bert(folder, layers=3, hidden=32, seed=0):
    """A random BERT with a real WordPiece tokenizer, saved in HF format; small enough for tests."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS,
             *"abcdefghijklmnopqrstuvwxyz.,!?'", *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_bert(tmp_path):
    return make_tiny_bert(tmp_path / "tiny-bert")
