"""separate: the upper bound, one baseline model per depth k, each cut to k layers before training.

What ielab's 2DMSE reproduction (ielab/2DMSE-Reproduce) and Starbucks (Zhuang et al. 2024, "BERT-Separate")
compare elastic models with: the best a k-layer model can do with the same data and recipe. Each depth k is
the backbone truncated to its first k layers (backbone.truncate) and trained with the baseline loss; cell (k, d)
of the combined grid is depth k's model truncated to width d (workflow/scripts/combine_separate.py).
Outputs per depth: out/model_layers{k}/, loss_layers{k}.csv, train_info_layers{k}.json; out/train_info.json
summarises them.

Options: dims (as baseline); depths (the depths to train, default every depth 1..L; e.g. [2, 4, 6, 8, 10, 12],
the rows the published BERT-base tables report; the combined grid then has those layers only); top_model (the
model folder of the baseline run with the same settings: its full depth is copied instead of trained again, after
checking that its train_info.json config matches); per_depth ({k: {train key: value}}: depth k's own values, e.g.
{1: {lr: 6.0e-4}}; a sweep picks each depth on its own cell, SELECT_ON below, and the workflow trains its other
seeds with these picks).

    twodmse train --config configs/train/stsb.yaml --method separate --out runs/separate
"""
import json
import shutil
from pathlib import Path

from .. import backbone, checkpoint, distributed, util
from ..schema import Value
from ..train_config import ConfigError, changed_keys
from .baseline import Method as Baseline

# A sweep picks its values on these cells (twodmse.cells.CELL_SETS): each depth's model on its own (k, H).
SELECT_ON = "each-depth"

OPTIONS = {**Baseline.OPTIONS,
           "depths": Value(None, list, "the depths to train one model each for; null = every depth 1..L",
                           items=Value(1, int, "a depth", low=1)),
           "top_model": Value(None, str, "the model folder of the baseline run with the same settings (its full "
                                         "depth is copied, not trained again)"),
           "per_depth": Value(None, dict, "train keys of one depth, e.g. {1: {lr: 6.0e-4}} (a sweep's per-depth "
                                          "picks)")}
# Train keys a depth may set for itself: what a sweep can vary (model, method, seed and device are the run's).
RUN_KEYS = ("model", "method", "method_options", "seed", "device")


def check_config(cfg, source):
    """per_depth: depths >= 1, each with train keys whose values pass the train config's own checks."""
    from ..train_config import validate
    per_depth = cfg["method_options"].get("per_depth")
    if per_depth is None:
        return
    example = "e.g. per_depth: {1: {lr: 6.0e-4}}"
    for k, values in per_depth.items():
        key = f"method_options.per_depth.{k}"
        if not str(k).isdigit() or int(k) < 1 or not isinstance(values, dict):
            raise ConfigError(f"{source}: {key}: a depth (1, 2, ...) with a mapping of train keys, {example}")
        if fixed := sorted(set(values) & set(RUN_KEYS)):
            raise ConfigError(f"{source}: {key}: {fixed} belong to the whole run, not to one depth")
        validate({**cfg, **values, "method": "baseline", "method_options": {}}, f"{source}: {key}")


def depth_settings(cfg):
    """{depth: its train keys} from method_options.per_depth (YAML or JSON may give the depths as text)."""
    return {int(k): v for k, v in (cfg["method_options"].get("per_depth") or {}).items()}


def trained_depths(cfg, num_layers):
    """The depths to train: method_options.depths (sorted, each one once), else 1..num_layers."""
    depths = cfg["method_options"].get("depths")
    if depths is None:
        return list(range(1, num_layers + 1))
    if too_deep := sorted(k for k in set(depths) if k > num_layers):
        raise ConfigError(f"method_options.depths: depth(s) {too_deep} beyond the model's {num_layers} layers")
    return sorted(set(depths))


def train(cfg, out, resume=True):
    from ..train import run_one  # the loop imports the registry: import it when used
    distributed.join(distributed.device(cfg["device"]))
    if not resume and distributed.is_main():
        (out / "train_info.json").unlink(missing_ok=True)
    num_layers = backbone.load(cfg["model"]).num_layers
    top = cfg["method_options"].get("top_model")
    if top and not (Path(top).parent / "train_info.json").is_file():  # before any depth trains, not after
        raise ConfigError(f"method_options.top_model: {Path(top).parent / 'train_info.json'} not found; train that "
                          "baseline run first, or leave top_model out to train the full depth here")
    depths = trained_depths(cfg, num_layers)
    own = depth_settings(cfg)
    if untrained := sorted(set(own) - set(depths)):
        raise ConfigError(f"method_options.per_depth: depth(s) {untrained} are not trained (depths: {depths})")
    shared = {**cfg, "method_options": {k: v for k, v in cfg["method_options"].items()
                                        if k not in ("top_model", "per_depth", "depths")}}
    depth_cfg = {k: {**shared, **own.get(k, {})} for k in depths}
    reuse = top and num_layers in depths
    runs = {k: run_one(depth_cfg[k], checkpoint.paths(out, f"_layers{k}"), "baseline", layers=k, resume=resume)
            for k in depths if not (reuse and k == num_layers)}
    if reuse:
        runs[num_layers] = _reuse_top(depth_cfg[num_layers], top, checkpoint.paths(out, f"_layers{num_layers}"))
    if distributed.is_main():
        util.write_json(out / "train_info.json", util.provenance(cfg, models={
            k: {key: r.get(key) for key in ("model_dir", "steps", "wall_time_s", "final_loss")}
            for k, r in runs.items()}))
    return out


def _reuse_top(cfg, top, files):
    """The full-depth model is the baseline trained with the same settings: copy that run's model instead of
    training it again (method_options.top_model = its model folder; its train_info.json must match)."""
    top = Path(top)
    info_path = top.parent / "train_info.json"
    if not info_path.is_file():
        raise ConfigError(f"method_options.top_model: {info_path} not found; train that baseline run first")
    info = json.loads(info_path.read_text())
    want = json.loads(json.dumps({**cfg, "method": "baseline"}, default=str))
    changed = changed_keys(info.get("config", {}), want)
    if changed:
        raise ConfigError(f"method_options.top_model: {top} was trained with other settings (differs in: "
                          f"{', '.join(changed)}); only the same baseline run can stand in for the top depth")
    info = {**info, "model_dir": str(files["model"]), "copied_from": str(top)}
    if distributed.is_main():
        util.atomic_write(files["model"], lambda tmp: shutil.copytree(top, tmp, dirs_exist_ok=True), folder=True)
        util.write_json(files["info"], info)
    distributed.barrier()
    return info
