"""The `twodmse train` config: every key with its default, type and help, and the checks made before any work."""
import difflib
from pathlib import Path

from . import backbone, data, losses, methods, util
from . import schema
from .schema import Value

# Every key of the training config, declared once (twodmse.schema.Value): its default, type, range and meaning. The
# one source of the checks below, of `twodmse train --help` and of the workflow's schema of `train:`.
CONFIG = {
    "model": Value(backbone.DEFAULT_MODEL, str, "hub id or local folder of the backbone"),
    "pooling": Value(None, str, "null = what the model folder declares, else mean", choices=backbone.POOLINGS),
    "max_length": Value(128, int, "tokens per sentence; longer sentences are cut", low=1),
    "train_data": Value("stsb", str, "stsb | nli | path to a .jsonl/.csv file (see twodmse.data.load_train)"),
    "train_source": Value("auto", str, "where train_data comes from; auto = mirror, PyPI-embedded, then hub",
                          choices=data.SOURCES),
    "method": Value(None, str, "the training method (required; one file each in twodmse/methods/)",
                    choices=methods.names(), null=False),
    "method_options": Value({}, dict, "the method's own options (see its file's OPTIONS; Matryoshka2dLoss "
                                      "arguments for st-matryoshka2d)"),
    "loss": Value({}, dict, "loss weights and temperatures (twodmse.losses.KEYS): cosine_w, ibn_w, angle_w, *_tau"),
    "epochs": Value(1, int, "passes over the data (ignored when max_steps is set)", low=1),
    "max_steps": Value(None, int, "optimizer steps; when set it overrides epochs", low=1),
    "batch_size": Value(32, int, "pairs (or triplets) per forward pass", low=1),
    "grad_accum": Value(1, int, "forward passes per optimizer step", low=1),
    "length_chunks": Value(4, int, "a batch's sentences are sorted by length and encoded in this many chunks, each "
                                   "padded only to its own longest (the loss still sees the whole batch); 1 = one "
                                   "padded forward", low=1),
    "lr": Value(2e-5, float, "peak AdamW learning rate", above=0,
                why="0 trains nothing, a negative lr climbs the loss"),
    "warmup_ratio": Value(0.1, float, "fraction of steps of linear warmup; then linear decay to 0", low=0, below=1),
    "weight_decay": Value(0.0, float, "AdamW decay of weight matrices (not biases or LayerNorm); the default is the "
                                      "Hugging Face Trainer's (TrainingArguments), which AnglE and "
                                      "sentence-transformers train through", low=0,
                          why="a negative decay grows the weights"),
    "max_grad_norm": Value(1.0, float, "clip the gradient norm to this, null = no clipping; the default is the Hugging "
                                       "Face Trainer's (TrainingArguments), as for weight_decay", above=0, null=True,
                           why="clipping to a negative norm reverses every update"),
    "layer_lr_decay": Value(1.0, float, "layer n of L trains at lr x layer_lr_decay^(L - n), the embeddings at "
                                        "lr x layer_lr_decay^L (exit heads at lr): < 1 slows the lower layers "
                                        "(layer-wise lr decay), > 1 speeds them up; 1 = one lr", above=0,
                            why="a negative factor reverses the update of every other layer"),
    "gradient_equilibrium": Value(False, bool, "rescale the gradient each layer's output receives to (its exit's + "
                                               "(L - n) x the layers above's) / (L - n + 1) (Li et al. 2019; "
                                               "backbone.gradient_equilibrium); grid methods only"),
    "top_first": Value(0.0, float, "the first fraction of the optimizer steps trains (L, H) alone, as baseline, "
                                   "then the method's cells (the mixed regime, Kubaty et al. 2024); grid methods "
                                   "only", low=0, below=1, why="at 1 the method's own cells would never train"),
    "uncertainty_weights": Value(0.0, float, "learn one loss weight per cell: each supervised cell's loss l becomes "
                                             "exp(-s) l + s, s trained with the model at this learning rate "
                                             "(Kendall et al. 2018; the learned weights exp(-s) are in "
                                             "train_info.json); 0 = off; grid methods, one process", low=0,
                                 why="a negative rate climbs the loss"),
    "pcgrad": Value(False, bool, "gradient surgery between the top cell's loss and the rest of the method's: "
                                 "where their gradients conflict, each loses its component along the other's "
                                 "(PCGrad, Yu et al. 2020; twodmse.surgery); one extra backward pass per step; grid "
                                 "methods, one process"),
    "exit_heads": Value(False, (bool, str), "train a head per exit below the top layer with the model, starting as "
                                            "the identity: true or linear = a linear map, mlp = x + MLP(LayerNorm(x)) "
                                            "(a residual MLP as wide as the model); saved as "
                                            "exit_heads.safetensors in its folder and applied by twodmse.load and "
                                            "the evaluator (backbone.ExitHeads); grid methods only",
                        choices=backbone.ExitHeads.KINDS),
    "seed": Value(42, int, "seeds dropout, the shuffle and the objective's sampling", low=0, below=2 ** 32,
                  why="numpy's seeds are 32-bit"),
    "save_every": Value(100, int, "checkpoint every N optimizer steps", low=1),
    "bf16": Value(None, bool, "bf16 autocast of the forward passes; null = on with CUDA, off on CPU; true on a "
                              "CPU with bf16 units (avx512_bf16, AMX) trains faster but not like fp32: check its "
                              "results against fp32 runs before relying on it"),
    "device": Value(None, str, "cpu | cuda | cuda:1; null = cuda when available"),
    "limit": Value(None, int, "train on the first N examples only (tests, smoke runs)", low=1),
}
# What the workflow sets per run itself (backbone, method, seed): not keys of its `train:` block.
RUN_KEYS = ("model", "method", "seed")


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
    out = {key: cfg.get(key, value.default) for key, value in CONFIG.items()}
    if out["method"] is None:
        raise ConfigError(f"{source}: no 'method'; set it in the config or pass --method "
                          f"({', '.join(methods.names())})")
    for key, value in CONFIG.items():
        if value.kind is float and isinstance(out[key], str):
            try:  # YAML 1.1 reads `lr: 2e-5` (no dot) as a string
                out[key] = float(out[key])
            except ValueError:
                pass
        if value.kind is float and isinstance(out[key], int) and not isinstance(out[key], bool):
            out[key] = float(out[key])
        if (problem := value.check(out[key])) is not None:
            raise ConfigError(f"{source}: '{key}' {problem}")
    try:  # the method's options, and the loss keys (the same for pairs and triplets), before any model loads
        methods.check_options(out["method"], out["method_options"])
        losses.config(out["loss"], 2)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    for key in ("exit_heads", "gradient_equilibrium", "top_first", "uncertainty_weights", "pcgrad"):
        if out[key] and methods.trains_itself(out["method"]):
            raise ConfigError(f"{source}: '{key}' is for the grid methods; {out['method']} trains its own way")
    check = getattr(methods.get(out["method"]), "check_config", None)
    if check:
        check(out, source)
    return out


def changed_keys(saved, cfg):
    """The keys whose value differs between a config saved by an earlier run and cfg (both validated; a key the
    saved one lacks was added to twodmse since, and counts at its default)."""
    saved = {**schema.defaults(CONFIG), **saved}
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


def workflow_schema():
    """The JSON schema of the workflow's `train:` keys (and of each method_settings entry), made from CONFIG and
    losses.KEYS: written to workflow/schemas/train_keys.schema.yaml by `python -m twodmse.train_config`."""
    keys = {key: value for key, value in CONFIG.items() if key not in RUN_KEYS}
    out = schema.json_schema(keys)
    out["properties"]["loss"] = {**schema.json_schema(losses.KEYS), "description": CONFIG["loss"].help}
    del out["additionalProperties"]  # the referring schema closes it (method_settings adds keys of its own)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": "GENERATED from twodmse/train_config.py CONFIG and twodmse/losses.py KEYS by "
                        "`python -m twodmse.train_config > workflow/schemas/train_keys.schema.yaml`; do not edit. "
                        "Each run's method_options are checked against its method's OPTIONS by rule "
                        "check_train_configs, with the same declarations.",
            **out}


if __name__ == "__main__":
    import yaml
    print(yaml.safe_dump(workflow_schema(), sort_keys=False, width=120), end="")
