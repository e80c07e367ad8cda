"""st-matryoshka2d: sentence-transformers' own Matryoshka2dLoss and trainer, as a peer on our data and schedule.

Upstream code: sentence-transformers `sentence_transformers/losses/Matryoshka2dLoss.py` (Matryoshka2dLoss =
AdaptiveLayerLoss(MatryoshkaLoss(base))), trained by SentenceTransformerTrainer (the transformers Trainer).
The base loss is CoSENTLoss for scored pairs and MultipleNegativesRankingLoss for triplets (nli); our `loss`
key does not apply. Same starting point (the backbone with our pooling and max_length), data order seed,
linear warmup/decay schedule and step count as our runs, so its grid can be set beside ours.

Options: Matryoshka2dLoss's keyword arguments, declared with their types and ranges in OPTIONS below and checked
before any model loads; matryoshka_dims defaults to cells.default_dims (the hidden size and the powers of two below
it down to 8).
Needs sentence-transformers>=3, datasets and accelerate.

    twodmse train --config configs/train/stsb.yaml --method st-matryoshka2d --out runs/st
"""
import csv
import math
import shutil
import time

from .. import backbone, cells, checkpoint, data, distributed, util
from ..export import save_sentence_transformer
from ..schema import Value
from ..train_config import ConfigError

# A sweep picks its values on these cells (twodmse.cells.CELL_SETS): every cell, as an elastic method.
SELECT_ON = "all"

# Matryoshka2dLoss's keyword arguments (as in sentence-transformers 6.3) but model and loss, which we pass.
OPTIONS = {
    "matryoshka_dims": Value(None, list, "training widths; null = the hidden size and the powers of two below it "
                                         "down to 8", items=Value(8, int, "a width", low=1)),
    "matryoshka_weights": Value(None, list, "one weight per width; null = 1 each",
                                items=Value(1.0, float, "a weight", low=0)),
    "n_layers_per_step": Value(1, int, "random layers below the last one trained per step; -1 = all", low=-1),
    "n_dims_per_step": Value(1, int, "random widths trained per layer and step; -1 = all", low=-1),
    "last_layer_weight": Value(1.0, float, "weight of the last layer's loss", low=0),
    "prior_layers_weight": Value(1.0, float, "weight of the lower layers' losses", low=0),
    "kl_div_weight": Value(1.0, float, "weight of the KL term toward the last layer", low=0),
    "kl_temperature": Value(0.3, float, "temperature of that KL term", above=0,
                            why="0 divides by zero, a negative one reverses the ranking"),
    "layer_weighting": Value("uniform", str, "how the lower layers are weighted", choices=("uniform", "log", "linear")),
}


def check_config(cfg, source):
    if cfg["loss"]:
        raise ConfigError(f"{source}: st-matryoshka2d trains with sentence-transformers' CoSENTLoss (pairs) or "
                          f"MultipleNegativesRankingLoss (triplets); remove 'loss' (got {cfg['loss']})")


def _library():
    """(SentenceTransformer, its Trainer, its TrainingArguments, losses, Dataset, TrainerCallback,
    get_last_checkpoint), or a MissingDependency saying what to install."""
    from ..train import MissingDependency
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
                                f"datasets accelerate") from None
    return (SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses, Dataset,
            TrainerCallback, get_last_checkpoint)


def train(cfg, out, resume=True):
    """Train with sentence-transformers' trainer into out (the transformers Trainer joins torchrun's processes
    itself); returns the model folder."""
    from ..train import columns, total_steps
    ST, Trainer, Arguments, losses, Dataset, Callback, last_checkpoint = _library()
    files = checkpoint.paths(out)
    work = out / "st_trainer"
    if not resume:
        checkpoint.fresh(files)
        shutil.rmtree(work, ignore_errors=True)
    elif checkpoint.done(files, cfg) is not None:
        return files["model"]
    device = distributed.device(cfg["device"])
    enc = backbone.load(cfg["model"], pooling=cfg["pooling"], max_length=cfg["max_length"])
    rank, world, _ = distributed.world()
    # one hand-over folder per process, outside work/ (which process 0 may be clearing)
    init = save_sentence_transformer(enc.model, enc.tokenizer, enc.pooling, enc.max_length, out / f".st_init{rank}")
    model = ST(str(init), device=device)
    shutil.rmtree(init)
    cols, scores = columns(data.load_train(cfg["train_data"], source=cfg["train_source"], limit=cfg["limit"]))
    if scores is None:
        dataset = Dataset.from_dict(dict(zip(("anchor", "positive", "negative"), cols)))
        base = losses.MultipleNegativesRankingLoss(model)
    else:
        dataset = Dataset.from_dict({"sentence1": cols[0], "sentence2": cols[1], "score": scores.tolist()})
        base = losses.CoSENTLoss(model)
    options = dict(cfg["method_options"])
    dims = options.pop("matryoshka_dims", None) or cells.default_dims(enc.hidden_size)
    loss = losses.Matryoshka2dLoss(model, base, dims, **options)
    total = total_steps(cfg, len(cols[0]), world)
    last = last_checkpoint(str(work)) if resume and work.exists() else None
    done_steps = int(last.rsplit("-", 1)[1]) if last else 0
    log = _loss_log(files["csv"], done_steps) if rank == 0 else None
    trainer = Trainer(model=model, args=_arguments(Arguments, cfg, work, total, device), train_dataset=dataset,
                      loss=loss, callbacks=[_csv_callback(Callback, log)])
    start = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=last)
    finally:
        if log:
            log.close()
    if rank != 0:
        return files["model"]
    with open(files["csv"]) as f:
        rows = list(csv.DictReader(f))
    summary = {"steps": result.global_step, "examples": len(cols[0]), "processes": world,
               "resumed_from_step": done_steps,
               "wall_time_s": round(time.perf_counter() - start, 2),  # this invocation only
               "final_loss": float(rows[-1]["loss"]) if rows else None, "matryoshka_dims": dims}
    save_sentence_transformer(model[0].auto_model, model.tokenizer, enc.pooling, enc.max_length, files["model"])
    util.write_json(files["info"], util.provenance(cfg, **summary, model_dir=str(files["model"]), device=device))
    shutil.rmtree(work, ignore_errors=True)
    return files["model"]


def _arguments(Arguments, cfg, work, total, device):
    """Our recipe in the transformers Trainer's terms."""
    return Arguments(
        output_dir=str(work), max_steps=total, per_device_train_batch_size=cfg["batch_size"],
        gradient_accumulation_steps=cfg["grad_accum"], learning_rate=cfg["lr"], lr_scheduler_type="linear",
        warmup_steps=math.ceil(cfg["warmup_ratio"] * total), weight_decay=cfg["weight_decay"],
        max_grad_norm=cfg["max_grad_norm"] or 0.0, seed=cfg["seed"], data_seed=cfg["seed"],
        bf16=device.startswith("cuda") and cfg["bf16"] is not False, use_cpu=device == "cpu",
        save_strategy="steps", save_steps=cfg["save_every"], save_total_limit=1, logging_steps=1,
        report_to="none", disable_tqdm=False)


def _csv_callback(Callback, log):
    class CsvLog(Callback):  # loss.csv like ours, one row per optimizer step
        def on_log(self, args, state, control, logs=None, **kwargs):
            if log and logs and "loss" in logs:
                log.append({"step": state.global_step, "epoch": round(state.epoch or 0, 4), "loss": logs["loss"],
                            "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm")})
    return CsvLog()


def _loss_log(path, last_step):
    """loss.csv without the rows after the checkpoint the trainer resumes from, open for appending."""
    from ..train import LossLog
    if path.exists():
        with open(path) as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= last_step] if last_step else []

        def write(tmp):
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(kept)
        util.atomic_write(path, write)
    return LossLog(path, path.stat().st_size if path.exists() else 0)
