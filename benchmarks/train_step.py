"""Cost of one training step (forward + loss + backward + optimizer step) per method, side by side.

    python benchmarks/train_step.py [--model ID] [--pairs 32] [--repeats 10]
    python benchmarks/train_step.py --device cuda --bert-base     # random BERT-base shape, 64 pairs, bf16

Every method trains its own copy of the same model on the same pre-tokenised STS-B train pairs; the methods
take turns within each repeat (order rotated) so drift in machine load hits all alike; medians are reported.
"st-matryoshka2d" is sentence-transformers' Matryoshka2dLoss(CoSENTLoss) on a SentenceTransformer loaded from
the same folder (skipped when sentence-transformers is missing). Goal: full / baseline <= 1.10.

Then one epoch (of the first --epoch-pairs STS-B train pairs; 0 = all 5,749) of our baseline
(`twodmse.train.train`: load, train, save; with the default length_chunks and with 1) against sentence-transformers' own SentenceTransformerTrainer with
CoSENTLoss on the same data, batch size, lr and warmup (load, train, save). Goal: ours / ST <= 1.0.

With --config (a workflow config), the methods timed are that config's trained methods, each named as its results
folder and built with its method_settings (method, exit_heads, method_options, and the train keys of TRAIN_KEYS) and
the config's loss; `separate` takes one step of each of its per-depth models (depth k cut to k layers), as it trains
all of them. A method with `top_first` is timed in its every-cell regime, an upper bound of its cost: its first
steps train (L, H) alone, as baseline's do. Every method trains for the same number of steps, so step time relative
to baseline is training cost relative to baseline.
--csv writes the medians and quartiles there, with provenance beside it (.json); the report draws them:

    python benchmarks/train_step.py --config configs/study.yaml --threads 2 --epoch-pairs -1 \\
        --csv results/minilm/speed/train_step.csv
"""
import argparse
import copy
import csv
import functools
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from twodmse import backbone, cells, data, methods, train, util

METHODS = [m for m in methods.names() if not methods.trains_itself(m)]  # every method of our training loop


def random_bert_base(folder, tokenizer_from):
    """A random-init BERT-base (12 x 768) with the tokenizer of tokenizer_from, saved to folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    torch.manual_seed(0)
    BertModel(BertConfig(), add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(folder)
    return folder


# The train keys of method_settings that change a step's work: gradient hooks, learned loss weights, gradient
# surgery. (top_first does not: it changes which steps supervise which cells.)
TRAIN_KEYS = ("gradient_equilibrium", "uncertainty_weights", "pcgrad")


def configured(path):
    """{results folder name: (method, exit_heads, method_options, {train key: value} of TRAIN_KEYS)} of every
    trained method of a workflow config, and the config's train loss."""
    cfg = yaml.safe_load(Path(path).read_text())
    settings = cfg.get("method_settings") or {}
    named = {}
    for name in cfg["methods"]:
        s = settings.get(name) or {}
        if name != "untrained":  # the backbone scored as is: nothing to train
            heads = s.get("exit_heads", False)
            named[name] = (s.get("method", name), heads and backbone.head_kind(heads), s.get("method_options") or {},
                           {k: s[k] for k in TRAIN_KEYS if k in s})
    return named, (cfg.get("train") or {}).get("loss")


def ours(method, enc, batch, lr, exit_heads=False, loss=None, options=None, keys=None):
    keys = keys or {}
    enc = copy.deepcopy(enc).train()
    if exit_heads:
        enc.add_exit_heads(exit_heads)
    if keys.get("gradient_equilibrium"):
        enc.equalize_gradients()
    objective = methods.build(method, enc.num_layers, enc.hidden_size, loss, **(options or {}))
    weights = objective.learn_weights(enc.device) if keys.get("uncertainty_weights") else []
    objective.split_top = bool(keys.get("pcgrad"))
    opt = torch.optim.AdamW([*enc.parameters(), *weights], lr=lr)

    def step(i):
        loss, _ = objective(enc, batch, i)
        train.backward(loss, [*enc.parameters(), *weights])
        opt.step()
        opt.zero_grad(set_to_none=True)
    step.encoder, step.objective = enc, objective  # the copy it trains and its objective, for a look at them
    return step


def separate(enc, batch, lr, loss=None, options=None):
    """One step of separate: a baseline step of each depth's own model, depth k cut to its first k layers."""
    steps = []
    for k in range(1, enc.num_layers + 1):
        depth = copy.deepcopy(enc)
        backbone.truncate(depth.model, k)
        steps.append(ours("baseline", depth, batch, lr, loss=loss, options=options))

    def step(i):
        for s in steps:
            s(i)
    return step


def method_steps(named, enc, batch, lr, loss):
    """{name: step} for {name: (method, exit_heads, method_options, train keys)}; sentence-transformers' method is
    left to st_matryoshka2d."""
    steps = {}
    for name, (method, heads, options, keys) in named.items():
        if method == "separate":
            steps[name] = separate(enc, batch, lr, loss, options)
        elif not methods.trains_itself(method):
            steps[name] = ours(method, enc, batch, lr, heads, loss, options, keys)
    return steps


def write_csv(path, times, args):
    """Median and quartiles of each method's step time, and its ratio to baseline's median; provenance beside."""
    q = {m: statistics.quantiles(t, n=4) for m, t in times.items()}
    base = q["baseline"][1]
    rows = [{"method": m, "ms_median": q[m][1] * 1e3, "ms_q1": q[m][0] * 1e3, "ms_q3": q[m][2] * 1e3,
             "repeats": len(times[m]), "relative_to_baseline": q[m][1] / base} for m in times]

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    util.atomic_write(Path(path), write)
    util.write_json(Path(path).with_suffix(".json"), util.provenance(vars(args), threads=torch.get_num_threads()))


def st_matryoshka2d(folder, pairs, device, lr):
    try:
        from sentence_transformers import SentenceTransformer, losses
    except ImportError:
        return None
    model = SentenceTransformer(folder, device=device).train()
    dims = cells.default_dims(model.get_sentence_embedding_dimension())
    loss_fn = losses.Matryoshka2dLoss(model, losses.CoSENTLoss(model), dims)
    feats = [{k: v.to(device) for k, v in model.preprocess(list(col)).items() if torch.is_tensor(v)}
             for col in (pairs.s1, pairs.s2)]
    labels = torch.tensor(pairs.scores, dtype=torch.float32, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)

    def step(i):
        loss_fn(feats, labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def epoch_ours(folder, n_pairs, batch_size, device, out, length_chunks=train.CONFIG["length_chunks"].default):
    cfg = {"model": str(folder), "method": "baseline", "train_data": "stsb", "limit": n_pairs or None,
           "batch_size": batch_size, "lr": 2e-5, "warmup_ratio": 0.1, "epochs": 1, "seed": 42,
           "save_every": 10 ** 9, "device": str(device), "length_chunks": length_chunks}
    t = time.perf_counter()
    train.train(cfg, out, resume=False)
    return time.perf_counter() - t


def epoch_st(folder, n_pairs, batch_size, device, out):
    """sentence-transformers' own trainer and CoSENTLoss: what a user would otherwise pick."""
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)
    pairs = data.load_train("stsb", limit=n_pairs or None)
    dataset = Dataset.from_dict({"sentence1": pairs.s1, "sentence2": pairs.s2,
                                 "score": [float(x) for x in pairs.scores]})
    t = time.perf_counter()
    model = SentenceTransformer(str(folder), device=str(device))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=batch_size, learning_rate=2e-5,
        warmup_ratio=0.1, seed=42, save_strategy="no", report_to="none", logging_steps=10 ** 9,
        use_cpu=device.type == "cpu", dataloader_drop_last=False)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                               loss=losses.CoSENTLoss(model)).train()
    model.save(str(Path(out) / "model"))
    return time.perf_counter() - t


def timed(step, i, device, bf16):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=backbone.DEFAULT_MODEL)
    ap.add_argument("--pairs", type=int, default=None, help="STS-B train pairs per batch (32; 64 with --bert-base)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bert-base", action="store_true", help="random-init BERT-base shape (12 x 768), bf16 autocast")
    ap.add_argument("--no-st", action="store_true", help="skip sentence-transformers' Matryoshka2dLoss")
    ap.add_argument("--config", default=None,
                    help="time the trained methods of this workflow config (configs/study.yaml), named as their "
                         "results folders, instead of every registered method")
    ap.add_argument("--csv", default=None, help="write each method's step time and ratio to baseline here")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--epoch-pairs", type=int, default=0,
                    help="pairs in the one-epoch comparison with sentence-transformers' trainer (0 = all; "
                         "640 = 20 steps, for a quick look); -1 skips it")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pairs = data.load_train("stsb", limit=args.pairs or (64 if args.bert_base else 32))
    tmp = tempfile.TemporaryDirectory()
    folder = backbone.resolve(args.model)
    if args.bert_base:
        folder = random_bert_base(tmp.name, folder)
    enc = backbone.load(folder, device=device)
    feats = enc.tokenize(list(pairs.s1) + list(pairs.s2)).to(device)
    batch = {"input_ids": feats["input_ids"], "attention_mask": feats["attention_mask"],
             "labels": torch.tensor(pairs.scores, dtype=torch.float32, device=device), "k": 2}
    named, loss = configured(args.config) if args.config else ({m: (m, False, {}, {}) for m in METHODS}, None)
    if "baseline" not in named:
        ap.error(f"{args.config}: times are relative to baseline; add baseline to its methods")
    steps = method_steps(named, enc, batch, 2e-5, loss)
    if not args.no_st and (st := st_matryoshka2d(folder, pairs, device, 2e-5)) is not None:
        steps["st-matryoshka2d"] = st
    del enc
    print(f"{args.model if not args.bert_base else 'random BERT-base'}: {len(pairs)} pairs, "
          f"seq len {feats['input_ids'].shape[1]}, device {device}, bf16 {args.bert_base}, "
          f"torch threads {torch.get_num_threads()}")
    names = list(steps)
    times = {m: [] for m in names}
    for r in range(args.warmup + args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for m in order:
            t = timed(steps[m], r, device, args.bert_base)
            if r >= args.warmup:
                times[m].append(t)
    med = {m: statistics.median(times[m]) for m in names}
    for m in names:
        print(f"{m:>16}: median {med[m] * 1e3:8.1f} ms/step  (min {min(times[m]) * 1e3:.1f}, "
              f"max {max(times[m]) * 1e3:.1f}, n={len(times[m])})")
    if args.csv:
        write_csv(args.csv, times, args)
        print(f"wrote {args.csv}")
    epoch = {}
    if args.epoch_pairs >= 0 and not args.no_st and not args.bert_base:
        batch_size = len(pairs)
        # ours as configured by default, ours with one padded forward per batch (how much the length-sorted
        # chunks save), and sentence-transformers' trainer
        runs = (("twodmse baseline", epoch_ours),
                ("twodmse, length_chunks=1", functools.partial(epoch_ours, length_chunks=1)),
                ("sentence-transformers", epoch_st))
        for r in range(2):  # alternate, keep the faster of two each: the first run pays for cold caches
            for name, fn in runs:
                with tempfile.TemporaryDirectory() as out:
                    epoch[name] = min(epoch.get(name, float("inf")), fn(folder, args.epoch_pairs, batch_size,
                                                                        device, out))
        for name, sec in epoch.items():
            print(f"{name:>22}: one epoch of {args.epoch_pairs or 'all'} pairs, batch {batch_size}: {sec:.1f} s")
    for m in names:
        print(f"ratio {m}/baseline = {med[m] / med['baseline']:.3f}" + ("  (goal <= 1.10)" if m == "full" else ""))
    if epoch:
        print(f"ratio epoch twodmse(length_chunks=1)/sentence-transformers = "
              f"{epoch['twodmse, length_chunks=1'] / epoch['sentence-transformers']:.3f}")
        print(f"ratio epoch twodmse/sentence-transformers = "
              f"{epoch['twodmse baseline'] / epoch['sentence-transformers']:.3f}  (goal <= 1.0)")


if __name__ == "__main__":
    main()
