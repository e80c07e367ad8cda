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
"""
import argparse
import copy
import functools
import statistics
import tempfile
import time
from pathlib import Path

import torch

from twodmse import backbone, cells, data, methods, train

METHODS = [m for m in methods.names() if not methods.trains_itself(m)]  # every method of our training loop


def random_bert_base(folder, tokenizer_from):
    """A random-init BERT-base (12 x 768) with the tokenizer of tokenizer_from, saved to folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    torch.manual_seed(0)
    BertModel(BertConfig(), add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(folder)
    return folder


def ours(method, enc, batch, lr):
    enc = copy.deepcopy(enc).train()
    objective = methods.build(method, enc.num_layers, enc.hidden_size)
    opt = torch.optim.AdamW(enc.parameters(), lr=lr)

    def step(i):
        loss, _ = objective(enc, batch, i)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


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


def epoch_ours(folder, n_pairs, batch_size, device, out, length_chunks=train.CONFIG["length_chunks"][0]):
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
    steps = {m: ours(m, enc, batch, 2e-5) for m in METHODS}
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
