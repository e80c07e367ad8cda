"""A training run's files and how it survives a kill: checkpoints, resume, the finished-run marker.

out/ of one model: loss.csv, checkpoint/ (state.pt: weights, exit heads and learned loss weights if any, optimizer,
scheduler, every process's RNG state, step, loss.csv offset, config), model/, train_info.json (written last: its
presence marks the run finished).
A checkpoint is swapped in whole (util.atomic_write with folder=True), so a kill at any moment leaves one
complete checkpoint: checkpoint/, or .checkpoint.old/ when the kill fell between the two renames.
"""
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from . import backbone, distributed, util
from .train_config import ConfigError, changed_keys


def paths(out, tag=""):
    out = Path(out)
    return {"out": out, "model": out / f"model{tag}", "ckpt": out / f"checkpoint{tag}",
            "csv": out / f"loss{tag}.csv", "info": out / f"train_info{tag}.json"}


def rng_state():
    """Every RNG's state as tensors and plain containers, so state.pt loads with torch.load(weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_space(out, model_path):
    """Up front: room for two checkpoints (weights + AdamW's two moments each, during the swap) and the model."""
    weights = sum(f.stat().st_size for f in Path(model_path).glob("*") if f.name in backbone.WEIGHT_FILES)
    need, free = 7 * weights, util.free_bytes(out)
    if free < need:
        raise util.UserError(f"--out {out}: {free / 1e6:.1f} MB free, but training {model_path} writes about "
                             f"{need / 1e6:.1f} MB there (checkpoints and the model). Fix: free space or choose "
                             f"another --out")


def save(path, state):
    util.atomic_write(path, lambda tmp: torch.save(state, Path(tmp) / "state.pt"), folder=True)


STATE_KEYS = ("model", "optimizer", "scheduler", "rng", "step", "csv_offset", "config", "wall_time_s")


def load(path):
    """(state, folder) of the newest complete checkpoint at path, or (None, None).

    weights_only=True: a state.pt is tensors and plain containers only, so a file swapped for a pickle that runs
    code is refused instead of run. A file that cannot be read that way (damaged, empty, truncated, written by
    another program or an older twodmse) is one UserError naming it and the way out."""
    for folder in (path, path.with_name(f".{path.name}.old")):  # .old: killed between the two renames
        file = folder / "state.pt"
        if file.exists():
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file; each means the same here
                raise unreadable(file, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
            missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else list(STATE_KEYS)
            if missing:
                raise unreadable(file, f"not a twodmse checkpoint: no {', '.join(missing)}")
            return state, folder
    return None, None


def unreadable(file, why):
    return util.UserError(f"{file} cannot be resumed from ({why[:200]}). Fix: start over with --no-resume (it "
                          f"removes the checkpoint), or choose another --out")


def resume(files, cfg, enc, opt, sched, loss_weights=()):
    """Load the checkpoint into enc/opt/sched/RNGs and the learned loss weights; returns (step, loss.csv offset, wall
    time, folder)."""
    state, where = load(files["ckpt"])
    if state is None:
        return 0, 0, 0.0, None
    changed = changed_keys(state["config"], cfg)
    if changed:
        raise ConfigError(f"{where} was made with a different config (changed: {', '.join(changed)}). "
                          f"Rerun with the same config, or start over with --no-resume or another --out.")
    rank, size, _ = distributed.world()
    if len(state["rng"]) != size:
        raise ConfigError(f"{where} was written by {len(state['rng'])} training process(es); resume it with as "
                          f"many (now {size}), or start over with --no-resume or another --out.")
    try:  # a checkpoint of another model, or with tensors of other shapes
        enc.model.load_state_dict(state["model"])
        if state.get("heads") is not None:
            enc.heads.load_state_dict(state["heads"])
        for w, saved in zip(loss_weights, state.get("loss_weights") or [], strict=True):
            w.data.copy_(saved)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"][rank])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise unreadable(where / "state.pt", f"it does not fit this model: {str(e).splitlines()[0]}") from None
    print(f"resuming from {where} at step {state['step']}", file=sys.stderr)
    return state["step"], state["csv_offset"], state["wall_time_s"], where


def done(files, cfg):
    """The info of a finished run with this config, None when there is none; a different config is an error."""
    if not files["info"].exists():
        return None
    info = json.loads(files["info"].read_text())
    if changed_keys(info.get("config", {}), json.loads(json.dumps(cfg, default=str))):
        raise ConfigError(f"{files['info']} is a finished run with a different config; "
                          f"use --no-resume to retrain or choose another --out")
    return info


def fresh(files):
    """Forget a previous run in these files (--no-resume)."""
    for p in (files["info"], files["csv"]):
        p.unlink(missing_ok=True)
    for p in (files["ckpt"], files["ckpt"].with_name(f".{files['ckpt'].name}.old")):
        shutil.rmtree(p, ignore_errors=True)
