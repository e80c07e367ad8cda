"""What a smaller (layer, dim) cell buys at inference time: encode and search cost.

For every depth k in 1..L the model is REALLY truncated (`backbone.load(path, layers=k)` drops
the blocks above k, so a forward pass costs k layers), and for every width d the search runs
on d-dimensional vectors. Encoding is timed on real sentences (STS-B test, or a built-in list
when the data are missing) after pre-tokenising them: tokenisation costs the same at every depth,
so it is left out. All depths are loaded at once and warmed up (two untimed calls); each repeat
then times every depth in turn, so that load from other processes hits all depths alike. We
report the median and the inter-quartile range (IQR = 75th - 25th percentile) of the repeats.

Columns of speed.csv (one row per device x layers x dim):
  model, layers, dim, device, dtype, threads  what was measured; threads = torch CPU threads
  batch_size          batch size of the throughput runs (latency is always batch 1)
  latency_ms_median   ms to encode ONE sentence with k layers (median over repeats x sentences)
  latency_ms_iqr      IQR of the same samples
  throughput_median   sentences/s encoding batches of batch_size sentences with k layers
  throughput_iqr      IQR of the throughput over the repeats
  encode_speedup      throughput_median(k) / throughput_median(L): batch speedup vs full depth
  search_ms_median    ms for one query: normalise + matmul against n_docs unit vectors + top-10
  search_ms_iqr       IQR of the same samples
  search_speedup      search_ms_median(full width) / search_ms_median(d)
  index_bytes         n_docs * d * 4: size of the float32 document matrix
  n_docs              number of documents searched
  speedup             end-to-end query speedup of the cell vs full depth & width:
                      (latency(L) + search(H)) / (latency(k) + search(d)); 1.0 at (L, H)

Search uses random unit vectors: its cost depends on the shape only, not on the values.
Defaults (repeats 5, 16 latency sentences, one batch of 128, 100k docs) take about 30 s for
all-MiniLM-L6-v2 on an idle 2-core CPU. Busy machines give noisy numbers; there, --threads 1
helps: with several threads each call waits for the slowest, descheduled one.
"""
import argparse
import sys
import time

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from twodmse import backbone, cells, util

COLUMNS = ["model", "layers", "dim", "device", "dtype", "threads", "batch_size",
           "latency_ms_median", "latency_ms_iqr", "throughput_median", "throughput_iqr",
           "encode_speedup", "search_ms_median", "search_ms_iqr", "search_speedup",
           "index_bytes", "n_docs", "speedup"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SEARCH_CALLS = 10  # queries per repeat: one search is only milliseconds

# Used only when the STS-B test set cannot be loaded; real sentences of ordinary length.
FALLBACK_SENTENCES = [
    "A man is playing a guitar on the street corner.",
    "The cat sat quietly on the windowsill, watching the birds outside.",
    "Two children are riding their bicycles down a steep hill.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "A woman is slicing onions in the kitchen.",
    "The train to London was delayed by forty minutes because of a signal failure.",
    "He forgot his umbrella and got soaked on the way home.",
    "Scientists have discovered a new species of frog in the rainforest.",
    "The committee will announce its decision next Tuesday.",
    "A dog is running through the snow with a stick in its mouth.",
    "She finished reading the novel in a single afternoon.",
    "The new bridge will reduce traffic in the city centre.",
    "Heavy rain caused flooding in several villages overnight.",
    "A group of people are dancing at an outdoor festival.",
    "The president met foreign leaders to discuss the trade agreement.",
    "My brother is learning to play the piano.",
    "The restaurant was full, so we ordered takeaway instead.",
    "An old man is feeding pigeons in the park.",
    "The team won the championship for the third year in a row.",
    "Prices of fresh vegetables have risen since the drought began.",
]


def load_sentences(n):
    """n real sentences (STS-B test, else the built-in list, repeated as needed), their source."""
    try:
        from twodmse import data
        pairs = data.load_eval("stsb")
        sents, source = list(dict.fromkeys(list(pairs.s1) + list(pairs.s2))), "stsb test"
    except Exception as e:  # timing needs sentences, not these exact ones
        print(f"speed: STS-B not loadable ({type(e).__name__}: {e}); using built-in sentences",
              file=sys.stderr)
        sents, source = FALLBACK_SENTENCES, "built-in list"
    return (sents * (n // len(sents) + 1))[:n], source


def seconds(fn, device):
    """Wall-clock seconds of one call of fn()."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()  # CUDA calls return before the work is done
    return time.perf_counter() - start


def median_iqr(x):
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    return float(q50), float(q75 - q25)


def search(queries, index, k=10):
    """Cosine top-k of queries [Q, d] against unit-norm rows index [N, d] -> (scores, ids) [Q, k]."""
    q = torch.nn.functional.normalize(queries, dim=-1)
    return torch.topk(q @ index.T, min(k, index.shape[0]), dim=-1)


def unit_index(n_docs, dim, device, seed=0):
    """n_docs random unit vectors of width dim: a stand-in document matrix."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n_docs, dim, generator=g), dim=-1).to(device)


def encode_timings(path, layers, sentences, batch, device, dtype, repeats, bar):
    """{k: latency and throughput of the model cut to k layers}. Each repeat visits every depth
    in turn, so load from other processes slows all depths alike instead of a few."""
    models = {k: backbone.load(path, layers=k, device=device).to(DTYPES[dtype]) for k in layers}

    def inputs(sents):  # the tokenizer is the same at every depth
        t = models[layers[0]].tokenize(sents)
        return t["input_ids"].to(device), t["attention_mask"].to(device)

    singles, x = [inputs([s]) for s in sentences], inputs(batch)
    latency, throughput = {k: [] for k in layers}, {k: [] for k in layers}
    with torch.inference_mode():
        for enc in models.values():  # warm-up: the first calls of a fresh model are slow
            for _ in range(2):
                enc.last_layer(*x)
                enc.last_layer(*singles[0])
        for _ in range(repeats):
            for k, enc in models.items():
                latency[k] += [seconds(lambda: enc.last_layer(*s), device) * 1e3 for s in singles]
                throughput[k].append(len(batch) / seconds(lambda: enc.last_layer(*x), device))
            bar.update()
    out = {}
    for k in layers:
        (lat, lat_iqr), (thr, thr_iqr) = median_iqr(latency[k]), median_iqr(throughput[k])
        out[k] = dict(latency_ms_median=lat, latency_ms_iqr=lat_iqr,
                      throughput_median=thr, throughput_iqr=thr_iqr)
    return out


def search_timings(n_docs, dim, device, repeats):
    index = unit_index(n_docs, dim, device)
    query = torch.randn(1, dim, device=device)
    with torch.inference_mode():
        search(query, index)  # warm-up
        ms = [seconds(lambda: search(query, index), device) * 1e3
              for _ in range(repeats * SEARCH_CALLS)]
    med, iqr = median_iqr(ms)
    return dict(search_ms_median=med, search_ms_iqr=iqr, index_bytes=n_docs * dim * 4)


def speed_table(enc_rows, search_rows):
    """Cross depth x width per device and add the speedups vs full depth & width."""
    df = pd.DataFrame(enc_rows).merge(pd.DataFrame(search_rows), on="device")
    full = df[(df.layers == df.layers.max()) & (df.dim == df.dim.max())].set_index("device")

    def at_full(values):  # the full-depth-and-width value of each row's device
        return df.device.map(values)
    df["encode_speedup"] = df.throughput_median / at_full(full.throughput_median)
    df["search_speedup"] = at_full(full.search_ms_median) / df.search_ms_median
    e2e_full = at_full(full.latency_ms_median + full.search_ms_median)
    df["speedup"] = e2e_full / (df.latency_ms_median + df.search_ms_median)
    return df.sort_values(["device", "layers", "dim"], ascending=[True, True, False])[COLUMNS] \
        .reset_index(drop=True)


def measure(model, layers=None, dims=None, devices=("cpu",), dtype="float32", repeats=5,
            n_docs=100_000, batch_size=128, n_latency=16, progress=True):
    """The speed table (see the module docstring) and a dict describing the inputs."""
    path = backbone.resolve(model)
    full = backbone.load(path)
    L, H = full.num_layers, full.hidden_size
    del full
    # Full depth and width are the reference of every speedup, so they are always measured.
    layers = sorted(set(util.check_cells(layers or backbone.all_layers(L), L, "layers", "--layers")) | {L})
    dims = sorted(set(util.check_cells(dims or cells.default_dims(H), H, "widths", "--dims")) | {H}, reverse=True)
    sents, source = load_sentences(max(n_latency, batch_size))
    meta = dict(model=model, path=path, num_layers=L, hidden_size=H, sentences=source,
                n_latency=n_latency, repeats=repeats, n_docs=n_docs, batch_size=batch_size)
    common = dict(model=model, dtype=dtype, threads=torch.get_num_threads(),
                  batch_size=batch_size, n_docs=n_docs)
    bar = tqdm(total=len(devices) * (repeats + len(dims)), desc="speed", disable=not progress)
    enc_rows, search_rows = [], []
    for device in devices:
        bar.set_postfix(device=device, step="encode")
        timings = encode_timings(path, layers, sents[:n_latency], sents[:batch_size], device,
                                 dtype, repeats, bar)
        enc_rows += [dict(common, device=device, layers=k, **t) for k, t in timings.items()]
        for d in dims:
            bar.set_postfix(device=device, step=f"search d={d}")
            t = search_timings(n_docs, d, device, repeats)
            search_rows.append(dict(device=device, dim=d, **t))
            bar.update()
    bar.close()
    return speed_table(enc_rows, search_rows), meta


def add_cli(subparsers):
    p = subparsers.add_parser(
        "speed", help="time encoding at every depth and search at every width",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=backbone.DEFAULT_MODEL, help="model id or local folder")
    p.add_argument("--out", required=True, help="folder for speed.csv and speed.json")
    p.add_argument("--layers", type=util.int_list, help="depths to time, e.g. 1,3,6 (default: all)")
    p.add_argument("--dims", type=util.int_list, help="widths to search, e.g. 384,96 (default: the hidden size and the powers of two below it down to 8)")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                   help="all = CPU, plus CUDA when present (default)")
    p.add_argument("--repeats", type=util.positive_int, default=5, help="timed repeats after warm-up (default 5)")
    p.add_argument("--n-docs", type=util.positive_int, default=100_000, help="documents searched (default 100000)")
    p.add_argument("--batch-size", type=util.positive_int, default=128, help="throughput batch size (default 128)")
    p.add_argument("--n-latency", type=util.positive_int, default=16,
                   help="sentences timed one by one for latency (default 16)")
    p.add_argument("--threads", type=util.positive_int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32",
                   help="model weights dtype (search is always float32)")
    p.set_defaults(func=run)


def run(args):
    if args.device == "cuda":
        util.check_device("cuda")
    devices = [args.device]
    if args.device == "all":
        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    if args.threads:
        torch.set_num_threads(args.threads)
    with util.output_lock(args.out):
        df, meta = measure(args.model, args.layers, args.dims, devices, args.dtype, args.repeats,
                           args.n_docs, args.batch_size, args.n_latency)
        config = {k: v for k, v in vars(args).items() if k != "func"}
        util.write_csv(f"{args.out}/speed.csv", df)
        util.write_json(f"{args.out}/speed.json", util.provenance(config, **meta))
    for device, part in df.groupby("device"):
        print(f"\nend-to-end query speedup on {device} (rows: layers, columns: dim)")
        print(part.pivot(index="layers", columns="dim", values="speedup")
              .sort_index(axis=1, ascending=False).round(2).to_string())
    print(f"\nwrote {args.out}/speed.csv and speed.json")
