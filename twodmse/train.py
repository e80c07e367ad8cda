"""Training: one method (twodmse.methods) on one backbone, resumable, saved in sentence-transformers format.

out/ after a run:
  loss.csv          one row per optimizer step (step, epoch, loss, lr, grad_norm, pairs_per_s, objective logs)
  checkpoint/       every `save_every` steps: weights, optimizer, scheduler, RNG states, loss.csv offset;
                    swapped in whole (twodmse.checkpoint), and removed once the run has finished
  model/            the final model in sentence-transformers format (twodmse.export)
  train_info.json   provenance: config, steps, wall time, final loss; its presence marks the run as finished
Restarting the same command continues from checkpoint/ and ends at the same weights as an unbroken run: the
shuffle of epoch e comes from a generator seeded by (seed, e) and every RNG state is in the checkpoint.
The objective is called as objective(encoder, batch, step, draw=i) with step = the 0-based optimizer step and i
the forward pass within it, counted over accumulation and processes (micro-batch x processes + rank), so a method
that samples per forward pass draws the same cells on resume, and N processes draw like one process with
grad_accum x N.
A method with its own train() (separate, st-matryoshka2d) is handed the run instead of this loop.

Several GPUs (or CPU processes) train one model with DistributedDataParallel when started by torchrun:
    torchrun --standalone --nproc_per_node 4 -m twodmse.cli train --config FILE --out DIR
batch_size is per process, as in the transformers Trainer: each optimizer step takes batch_size x processes x
grad_accum examples, process r taking the r-th contiguous slice of every global batch, so N processes train
exactly like one process with grad_accum x N (tested); in-batch losses see their own process's slice. Process 0
writes every file; the checkpoint keeps every process's RNG state, so a resume needs the same number of processes.
"""
import argparse
import contextlib
import csv
import functools
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import backbone, checkpoint, data, distributed, losses, methods, surgery, util
from .export import save_sentence_transformer
from .train_config import CONFIG, ConfigError, load_config, validate  # noqa: F401 (twodmse.train's interface)


class TrainingDiverged(util.UserError, RuntimeError):
    pass


class MissingDependency(util.UserError, RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------- data

def columns(data):
    """Pairs -> ([s1, s2], scores); Triplets -> ([anchor, positive, negative], None)."""
    if hasattr(data, "anchor"):
        return [list(data.anchor), list(data.positive), list(data.negative)], None
    scores = None if data.scores is None else torch.as_tensor(np.asarray(data.scores), dtype=torch.float32)
    return [list(data.s1), list(data.s2)], scores


def batches_per_epoch(n, batch_size, world):
    """Global batches of batch_size x world rows; a last one too small to give every process a row is dropped."""
    full, rest = divmod(n, batch_size * world)
    return max(1, full + (rest >= world))


def total_steps(cfg, n, world=1):
    return cfg["max_steps"] or max(1, cfg["epochs"] * batches_per_epoch(n, cfg["batch_size"], world)
                                   // cfg["grad_accum"])


class Stream:
    """Forward passes form one stream across epochs: pass m is batch m % per_epoch of epoch m // per_epoch.
    The shuffle of epoch e has its own generator seeded by (seed, e), so it does not depend on what consumed
    the global RNG, and a resumed run draws the same batches."""

    def __init__(self, n, batch_size, seed, world, rank):
        self.n, self.bsz, self.seed, self.world, self.rank = n, batch_size, seed, world, rank
        self.per_epoch = batches_per_epoch(n, batch_size, world)  # forward passes per epoch and process
        self.perm, self.epoch = None, None

    def rows(self, micro):
        """(the global batch's rows, this process's slice of them) for forward pass `micro`."""
        epoch, i = divmod(micro, self.per_epoch)
        if self.epoch != epoch:
            self.perm, self.epoch = torch.randperm(
                self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)), epoch
        rows = self.perm[i * self.bsz * self.world:(i + 1) * self.bsz * self.world]
        return rows, rows.tensor_split(self.world)[self.rank].tolist()


def _batch(enc, columns, scores, idx):
    """One tokenisation of all columns: rows = first sentences, then second ones, then negatives."""
    f = enc.tokenize([col[j] for col in columns for j in idx]).to(enc.device)
    return {"input_ids": f["input_ids"], "attention_mask": f["attention_mask"],
            "labels": None if scores is None else scores[idx].to(enc.device), "k": len(columns)}


# ---------------------------------------------------------------------------------------------- the loop

def linear_schedule(total, warmup):
    # Same shape as transformers' get_linear_schedule_with_warmup, so st-matryoshka2d runs on the same schedule.
    def factor(step):
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def _optimizer(enc, cfg, loss_weights=()):
    """AdamW over enc's parameters, and over loss_weights (learned loss weights) at their own rate."""
    decay = cfg["layer_lr_decay"]
    depth = _depths(enc) if decay != 1.0 else {}
    groups = {}  # (lr factor, weight matrix?) -> params; with one lr, the two groups of earlier checkpoints
    for p in enc.parameters():
        if p.requires_grad:
            factor = decay ** (enc.num_layers - depth[p]) if p in depth else 1.0
            groups.setdefault((factor, p.ndim >= 2), []).append(p)
    # biases and LayerNorm weights: no decay. fused: one kernel per step instead of a loop over tensors (measurably
    # faster on CPU)
    params = [{"params": ps, "lr": cfg["lr"] * f, "weight_decay": cfg["weight_decay"] if matrix else 0.0}
              for (f, matrix), ps in groups.items()]
    if loss_weights:
        params.append({"params": list(loss_weights), "lr": cfg["uncertainty_weights"], "weight_decay": 0.0})
    return torch.optim.AdamW(params, lr=cfg["lr"], fused=True)


def _depths(enc):
    """{parameter: its depth}: n for transformer layer n, 0 for the rest of the backbone (embeddings); exit heads
    are left out (they take the peak lr)."""
    layers = backbone.transformer_layers(enc.model)
    depth = {p: n for n, layer in enumerate(layers, 1) for p in layer.parameters()}
    return {**{p: 0 for p in enc.model.parameters() if p not in depth}, **depth}


class LossLog:
    """loss.csv, appended and flushed row by row; truncated to the checkpoint's offset on resume."""

    def __init__(self, path, offset):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as f:
            f.truncate(offset)  # drop rows written after the checkpoint we resume from
        self.fields = None
        if offset:
            with open(self.path) as f:
                self.fields = next(csv.reader(f))
        self.file = open(self.path, "a", newline="")

    def append(self, row):
        if self.fields is None:
            self.fields = list(row)
            csv.writer(self.file).writerow(self.fields)
        csv.DictWriter(self.file, self.fields, restval="", extrasaction="ignore").writerow(row)
        self.file.flush()
        return self.file.tell()

    def close(self):
        self.file.close()


def _bf16(cfg, enc):
    """Whether the forward passes run under bf16 autocast (train key bf16; null = with CUDA only)."""
    return enc.device.type == "cuda" if cfg["bf16"] is None else cfg["bf16"]


def _accumulate(model, forward, objective, stream, enc, data_cols, cfg, step, params):
    """The grad_accum forward/backward passes of one optimizer step -> (mean loss, mean logs, rows, last pass).
    params: every trained parameter (the model's and learned loss weights), for gradient surgery."""
    accum, cols, scores = cfg["grad_accum"], *data_cols
    use_bf16 = _bf16(cfg, enc)
    loss_sum, logs_sum, pairs = 0.0, {}, 0
    for micro in range(step * accum, (step + 1) * accum):
        rows, idx = stream.rows(micro)
        # DDP averages the gradients over processes in the backward of the last pass of a step only
        last = stream.world == 1 or micro == (step + 1) * accum - 1
        with contextlib.nullcontext() if last else model.no_sync():
            with torch.autocast(enc.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss, logs = objective(forward, _batch(enc, cols, scores, idx), step,
                                       draw=(micro - step * accum) * stream.world + stream.rank)
            cos = backward(loss / accum, params)
        if cos is not None:
            logs["task_cos"] = cos
        loss_sum = loss_sum + loss.detach().float().sum() / accum
        for k, v in logs.items():
            logs_sum[k] = logs_sum.get(k, 0.0) + float(v) / accum
        pairs += len(rows)
    return loss_sum, logs_sum, pairs, micro


def backward(loss, params):
    """loss.backward(); a loss of several tasks (a grid method with split_top) goes through PCGrad's gradient
    surgery instead (twodmse.surgery), which returns the tasks' gradient cosine (else None)."""
    if loss.dim() == 0:
        loss.backward()
        return None
    return surgery.pcgrad_backward(loss, params)


def fit(enc, objective, examples, cfg, files, resume=True, desc="train"):
    """Train enc in place with objective; returns a summary dict. Checkpoints to files['ckpt']."""
    data_cols = columns(examples)
    rank, world, _ = distributed.world()
    main = rank == 0  # the process that writes loss.csv, checkpoints and the progress bar
    n = len(data_cols[0][0])
    stream = Stream(n, cfg["batch_size"], cfg["seed"], world, rank)
    total = total_steps(cfg, n, world)
    objective.top_first_steps = round(cfg["top_first"] * total)
    objective.split_top = cfg["pcgrad"]
    loss_weights = objective.learn_weights(enc.device) if cfg["uncertainty_weights"] else []
    opt = _optimizer(enc, cfg, loss_weights)
    schedule = linear_schedule(total, math.ceil(cfg["warmup_ratio"] * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    step, offset, wall_before, last_good = checkpoint.resume(files, cfg, enc, opt, sched, loss_weights) if resume \
        else (0, 0, 0.0, None)
    first_step = step
    log = LossLog(files["csv"], offset) if main else None
    kill_at = int(os.environ.get("TWODMSE_KILL_AT_STEP", 0))  # test hook: SIGKILL ourselves after this step
    model = enc if world == 1 else torch.nn.parallel.DistributedDataParallel(
        enc, device_ids=[enc.device.index] if enc.device.type == "cuda" else None)
    forward = functools.partial(model, chunks=cfg["length_chunks"])
    enc.train()
    start, losses = time.perf_counter(), []
    params = [*enc.parameters(), *loss_weights]  # what gradient surgery takes its per-task gradients over
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", dynamic_ncols=True, disable=not main)
    try:
        while step < total:
            t0 = time.perf_counter()
            loss_sum, logs_sum, pairs, micro = _accumulate(model, forward, objective, stream, enc, data_cols, cfg,
                                                           step, params)
            epoch = (micro + 1) / stream.per_epoch
            # Checked before the update, so no bad weights can be saved; averaged, so every process stops alike.
            loss_sum = distributed.mean(loss_sum)
            if not math.isfinite(loss_sum):
                raise _diverged(f"loss is {loss_sum}", step, epoch, last_good, cfg)
            grad_norm = torch.nn.utils.clip_grad_norm_(enc.parameters(), cfg["max_grad_norm"] or math.inf).item()
            if not math.isfinite(grad_norm):
                raise _diverged(f"gradient norm is {grad_norm}", step, epoch, last_good, cfg)
            lr = cfg["lr"] * schedule(sched.last_epoch)  # the peak lr now (layer_lr_decay aside)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            pps = pairs / (time.perf_counter() - t0)
            if main:
                offset = log.append({"step": step, "epoch": round(epoch, 4), "loss": loss_sum, "lr": lr,
                                     "grad_norm": grad_norm, "pairs_per_s": round(pps, 1), **logs_sum})
            losses.append(loss_sum)
            bar.set_postfix(loss=f"{loss_sum:.4f}", pairs_s=f"{pps:.0f}", refresh=False)
            bar.update()
            if step % cfg["save_every"] == 0 and step < total:
                _save(files, enc, loss_weights, opt, sched, cfg, step, offset,
                      wall_before + time.perf_counter() - start)
                last_good = files["ckpt"]
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        bar.close()
        if log:
            log.close()
    enc.eval()
    learned = {"learned_cell_weights": objective.learned_weights()} if loss_weights else {}
    return {**learned, "steps": total, "examples": n, "processes": world, "resumed_from_step": first_step,
            "bf16_autocast": _bf16(cfg, enc),
            "wall_time_s": round(wall_before + time.perf_counter() - start, 2),
            "final_loss": losses[-1] if losses else None,
            "final_loss_mean10": float(np.mean(losses[-10:])) if losses else None}


def _save(files, enc, loss_weights, opt, sched, cfg, step, offset, wall_time):
    rng = distributed.gather(checkpoint.rng_state())
    if distributed.is_main():
        checkpoint.save(files["ckpt"], {
            "model": enc.model.state_dict(), "heads": enc.heads.state_dict() if enc.heads is not None else None,
            "loss_weights": [w.detach() for w in loss_weights],
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": rng, "step": step, "csv_offset": offset, "config": cfg, "wall_time_s": wall_time})
    distributed.barrier()


def _diverged(what, step, epoch, last_good, cfg):
    where = f"{last_good} (kept as it was)" if last_good else "none yet (no checkpoint was written)"
    return TrainingDiverged(
        f"{what} at step {step + 1} (epoch {epoch:.2f}); training stopped before updating the weights. "
        f"Last good checkpoint: {where}. Hint: lower lr (now {cfg['lr']}), set max_grad_norm: 1.0 or bf16: false, "
        f"or check the training data ({cfg['train_data']}) for empty or broken rows.")


# ---------------------------------------------------------------------------------------------- runs

def finish(enc, cfg, files, summary, **extra):
    """Save the model, then train_info.json (last: it marks the run finished); drop the checkpoint."""
    info = util.provenance(cfg, **summary, model_dir=str(files["model"]), **extra)
    if distributed.is_main():
        save_sentence_transformer(enc.model, enc.tokenizer, enc.pooling, enc.max_length, files["model"],
                                  enc.heads, source=enc.path)
        util.write_json(files["info"], info)
        shutil.rmtree(files["ckpt"], ignore_errors=True)
    distributed.barrier()
    return info


def run_one(cfg, files, method, layers=None, resume=True):
    """Train one model (all layers, or the first `layers`) with one grid method; returns its info."""
    rank, world, _ = distributed.world()
    if not resume:
        if rank == 0:
            checkpoint.fresh(files)
        distributed.barrier()
    elif (info := checkpoint.done(files, cfg)) is not None:
        print(f"{files['info']} exists: already trained", file=sys.stderr)
        return info
    device = distributed.device(cfg["device"])
    torch.manual_seed(cfg["seed"] + rank)  # + rank: each process draws its own dropout masks
    np.random.seed(cfg["seed"] + rank)
    random.seed(cfg["seed"] + rank)
    enc = backbone.load(cfg["model"], pooling=cfg["pooling"], max_length=cfg["max_length"], device=device,
                        layers=layers)
    if cfg["exit_heads"] and enc.heads is None:
        enc.add_exit_heads(backbone.head_kind(cfg["exit_heads"]))
    if cfg["gradient_equilibrium"]:
        enc.equalize_gradients()
    try:  # method_options and loss are checked against the model's size here, before any step
        objective = methods.build(method, enc.num_layers, enc.hidden_size, cfg["loss"], cfg["seed"],
                                  **cfg["method_options"])
    except ValueError as e:
        raise ConfigError(f"method_options / loss of {method}: {e}") from None
    for key, why in (("uncertainty_weights", "its weights are outside the model that DistributedDataParallel averages"),
                     ("pcgrad", "its per-task gradients bypass the gradient averaging of DistributedDataParallel")):
        if world > 1 and cfg[key]:
            raise ConfigError(f"{key} trains in one process only ({why}); train without torchrun")
    if world > 1 and getattr(objective, "two_forwards", False):
        raise ConfigError(f"{method} with these options runs two forward passes per step, which "
                          "DistributedDataParallel does not support; train it in one process (no torchrun)")
    examples = data.load_train(cfg["train_data"], source=cfg["train_source"], limit=cfg["limit"])
    summary = fit(enc, objective, examples, cfg, files, resume, method + (f" layers={layers}" if layers else ""))
    return finish(enc, cfg, files, summary, device=device)


def train(cfg, out_dir, resume=True):
    """Train as cfg says into out_dir; returns the model folder (out_dir itself for `separate`)."""
    cfg = validate(cfg)
    out = Path(out_dir)
    util.check_device(cfg["device"], "device")
    # checked before any work: the device, the model folder, and (by taking the lock) that out is writable
    with util.output_lock(out) if distributed.is_main() else contextlib.nullcontext():
        checkpoint.check_space(out, backbone.resolve(cfg["model"]))
        method = methods.get(cfg["method"])
        if hasattr(method, "train"):  # a method that trains its own way
            return method.train(cfg, out, resume)
        distributed.join(distributed.device(cfg["device"]))
        run_one(cfg, checkpoint.paths(out), cfg["method"], resume=resume)
        return checkpoint.paths(out)["model"]


# ---------------------------------------------------------------------------------------------- CLI

def add_cli(subparsers):
    epilog = "config keys (YAML):\n" + "\n".join(f"  {key:<15}{value.describe()}" for key, value in CONFIG.items())
    epilog += "\n\nloss keys:\n" + "\n".join(f"  {key:<15}{value.describe()}" for key, value in losses.KEYS.items())
    epilog += ("\n\noutputs: out/loss.csv (one row per step), out/checkpoint/ (every save_every steps; removed at the"
               "\nend), out/model/ (sentence-transformers format), out/train_info.json (provenance; marks it done)."
               "\nA killed run resumes from out/checkpoint/ when restarted with the same command."
               "\n\nmethods (each one file in twodmse/methods/; its docstring has the paper, code and options):\n"
               + "\n".join(f"  {name:<16}{_summary(name)}\n{_options(name)}" for name in methods.names())
               + "\n\nExamples: configs/train/*.yaml")
    p = subparsers.add_parser("train", help="train a backbone with an elastic objective",
                              description="Train a sentence encoder so every (layer, dim) cell is usable.",
                              epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file with the keys below")
    p.add_argument("--method", choices=methods.names(), help="overrides the config's method")
    p.add_argument("--out", help="output folder (default: runs/<config name>-<method>)")
    p.add_argument("--max-steps", type=int, help="overrides the config's max_steps")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from out/checkpoint/ (default) or start over")
    p.set_defaults(func=run_cli)


def _options(name):
    """A method's method_options, one line each, from its declaration (its file's OPTIONS)."""
    return "\n".join(f"      {key}: {value.describe()}" for key, value in methods.options(name).items())


def _summary(name):
    """The first paragraph of a method's docstring, after its name."""
    doc = (methods.get(name).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    return doc.split(": ", 1)[-1]


def run_cli(args):
    raw = load_config(args.config)
    if args.method:
        raw["method"] = args.method
    if args.max_steps is not None:
        raw["max_steps"] = args.max_steps
    cfg = validate(raw, source=args.config)
    out = args.out or f"runs/{Path(args.config).stem}-{cfg['method']}"
    path = train(cfg, out, resume=args.resume)
    distributed.leave()
    print(path)
    return 0
