"""Cost of scoring every (layer, dim) cell vs one plain full-depth encode, side by side.

    python benchmarks/eval_grid.py [--model ID] [--repeats 3]

Both sides encode the same distinct STS-B test sentences with the same batches. "plain" is
what any encoder does (top layer only); "grid" is the whole evaluation: all-layers forward,
pooling of every layer, cosine + Spearman/Pearson for every (layer, dim) cell. No cache is
used. Goal: grid / plain <= 1.15.
"""
import argparse
import statistics
import time

import numpy as np
import torch

from twodmse import backbone, cells, data, evaluate


@torch.inference_mode()
def plain_encode(enc, sentences, batch_size):
    order = np.argsort([-len(s) for s in sentences], kind="stable")
    out = np.empty((len(sentences), enc.hidden_size), dtype=np.float32)
    for start in range(0, len(sentences), batch_size):
        idx = order[start:start + batch_size]
        f = enc.tokenize([sentences[i] for i in idx])
        out[idx] = enc.last_layer(f["input_ids"], f["attention_mask"]).numpy()
    return out


def full_grid(enc, pairs, unique, batch_size):
    emb = evaluate.embed_all_layers(enc, unique, batch_size, progress=False)
    e1, e2 = evaluate.by_pair(emb, unique, pairs)
    return evaluate.grid_scores(e1, e2, pairs.scores, cells.default_dims(enc.hidden_size))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=backbone.DEFAULT_MODEL)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    enc = backbone.load(args.model)
    pairs = data.load_eval("stsb", "test")
    unique = sorted(set(pairs.s1) | set(pairs.s2))
    print(f"{args.model}: {len(pairs)} pairs, {len(unique)} distinct sentences, "
          f"{enc.num_layers} layers x {len(cells.default_dims(enc.hidden_size))} dims, "
          f"torch threads {torch.get_num_threads()}")
    plain_encode(enc, unique[:128], args.batch_size)  # warm-up
    times = {"plain": [], "grid": []}
    for r in range(args.repeats):  # interleaved so drift in machine load hits both alike
        t = time.perf_counter(); plain_encode(enc, unique, args.batch_size)
        times["plain"].append(time.perf_counter() - t)
        t = time.perf_counter(); rows = full_grid(enc, pairs, unique, args.batch_size)
        times["grid"].append(time.perf_counter() - t)
        print(f"repeat {r + 1}: plain {times['plain'][-1]:.2f}s  grid {times['grid'][-1]:.2f}s "
              f"({len(rows)} cells)")
    plain, grid = statistics.median(times["plain"]), statistics.median(times["grid"])
    print(f"median plain encode {plain:.2f}s, median full grid {grid:.2f}s")
    print(f"ratio grid/plain = {grid / plain:.3f}  (goal <= 1.15)")


if __name__ == "__main__":
    main()
