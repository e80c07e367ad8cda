"""Every (layer, dim) cell of a checkpoint scored by MTEB itself, from one all-layers encode a task.

MTEB sees one model per cell: `CellEncoder(layer, dim)`, whose embeddings are the slice
emb[layer-1, :, :dim] of the all-layers embeddings of `AllLayers` (one forward pass per batch,
cached on disk by checkpoint content hash), so all L x D cells of a task cost about one encode.
Results land in MTEB's own layout, ResultCache(OUT)/results/twodmse__<name>/<content hash>/
experiments/dim_<d>__layer_<n>__max_length_<m>__pooling_<p>/<Task>.json: the revision is the
checkpoint's content hash, so two checkpoints with the same folder name never share a score.
Tasks come from the Hugging Face hub by MTEB name; offline, the STS tasks run as "<Name>-local"
copies built from twodmse.data (same pairs, main score = our evaluator's Spearman / 100).
"""
import functools
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import backbone, evaluate, util
from .cells import default_dims

# MTEB STS tasks we can also build from local data (twodmse.data names).
LOCAL_STS = {"STSBenchmark": "stsb", "SICK-R": "sickr", "STS12": "sts12", "STS13": "sts13",
             "STS14": "sts14", "STS15": "sts15", "STS16": "sts16"}
ALIASES = {v: k for k, v in LOCAL_STS.items()}  # `--tasks stsb,sickr` works too
TASK_LISTS = Path(__file__).resolve().parent / "mteb_tasks.yaml"  # package data (configs/mteb_tasks.yaml links here)
CSV_COLUMNS = ["task", "layer", "dim", "main_score", "metric", "model", "revision"]


class AllLayers:
    """Every layer's embedding of any list of texts: computed once, then sliced by each cell."""

    def __init__(self, model, pooling=None, max_length=128, cache_dir=None, batch_size=64,
                 device=None, encoder=None, progress=True):
        if encoder is not None:  # a loaded Encoder (benchmarks, tests) fixes these three
            model, pooling, max_length = encoder.path, encoder.pooling, encoder.max_length
        from transformers import AutoConfig
        self.path = backbone.resolve(model)
        self.config = AutoConfig.from_pretrained(self.path)
        self.checkpoint_hash = util.content_hash(self.path)
        self.pooling = pooling or backbone.default_pooling(self.path)
        self.max_length = backbone.usable_max_length(self.config, max_length, self.path)  # the cache key's length
        self.cache_dir = util.check_writable(cache_dir or util.default_cache_dir(), "--cache")
        self.batch_size = batch_size
        self.progress, self.memo, self.encodes = progress, {}, 0
        self.shared = {}  # cache label -> (twodmse eval's label, its sentences): see share()
        device = util.check_device(device)
        self.encoder = functools.cache(lambda: encoder or backbone.load(self.path, self.pooling,
                                                                        self.max_length, device))

    def share(self, label, pairs):
        """Serve the texts of cache label `label` from the array `twodmse eval` caches for `pairs` (same key: data
        label and sorted sentences), so a local STS task costs no encode after an evaluation of the checkpoint."""
        self.shared[label] = (f"{pairs.name}-{pairs.split}", sorted(set(pairs.s1) | set(pairs.s2)))

    def __call__(self, texts, label):
        """texts -> [L, N, H] float32; label names the disk-cache file (task, subset, split)."""
        key = (label, tuple(texts))
        if key not in self.memo:
            label, unique = self.shared.get(label, (label, None))
            if unique is None or not set(texts) <= set(unique):
                label, unique = key[0], list(dict.fromkeys(texts))  # repeated texts are encoded once
            self.encodes += 1
            emb = evaluate.cached_embeddings(self.encoder, self.checkpoint_hash, self.pooling,
                                             self.max_length, label, unique, self.cache_dir,
                                             self.batch_size, self.progress)
            if unique != texts:
                index = {t: i for i, t in enumerate(unique)}
                emb = emb[:, [index[t] for t in texts]]
            self.memo[key] = emb
        return self.memo[key]


def cell_meta(name, revision, layer, dim, pooling, max_length):
    """MTEB metadata of one cell; layer/dim/pooling/max_length become MTEB's experiment folder."""
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    return ModelMeta(
        loader=None, name=name, revision=revision, release_date=None, languages=None,
        n_parameters=None, memory_usage_mb=None, max_tokens=max_length, embed_dim=dim,
        license=None, open_weights=True, public_training_code=None, public_training_data=None,
        framework=["PyTorch", "Transformers"], similarity_fn_name=ScoringFunction.COSINE,
        use_instructions=False, training_datasets=None,
        experiment_kwargs={"layer": layer, "dim": dim, "pooling": pooling, "max_length": max_length})


def cache_label(task, subset, split):
    return re.sub(r"[^\w.-]", "_", f"mteb-{task}-{subset}-{split}")


def make_cell_encoder(store, layer, dim, meta):
    """An MTEB encoder serving the (layer, dim) view of `store` (an AllLayers)."""
    from mteb.models.abs_encoder import AbsEncoder

    class CellEncoder(AbsEncoder):
        def __init__(self):
            self.store, self.layer, self.dim, self.mteb_model_meta = store, layer, dim, meta

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            texts = [t for batch in inputs for t in batch["text"]]
            label = cache_label(task_metadata.name, hf_subset, hf_split)
            # float64 so MTEB's cosines equal our evaluator's (it computes in the input dtype)
            return self.store(texts, label)[backbone.layer_index(self.layer), :, :self.dim].astype(np.float64)

    return CellEncoder()


def local_task(mteb_name, pairs):
    """An MTEB STS task named "<mteb_name>-local" holding `pairs` (a twodmse.data.Pairs)."""
    import mteb
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS
    digest = hashlib.sha256(json.dumps([pairs.s1, pairs.s2, pairs.scores.tolist()]).encode())
    base = mteb.get_task(mteb_name).metadata
    # The revision is the data's hash, so a changed local copy is never served a cached score.
    metadata = base.model_copy(update={
        "name": f"{mteb_name}-local", "superseded_by": None, "eval_splits": ["test"],
        "dataset": {"path": pairs.source or "twodmse.data", "revision": digest.hexdigest()[:16]},
        "description": f"{base.description} Local copy: {pairs.source} ({len(pairs)} pairs)."})

    class LocalSTS(AbsTaskSTS):
        min_score, max_score = 0, 5  # a linear rescale: correlations do not change

        def load_data(self, **kwargs):
            self.dataset = DatasetDict({"test": Dataset.from_dict(
                {"sentence1": pairs.s1, "sentence2": pairs.s2, "score": pairs.scores.tolist()})})
            self.data_loaded = True

    LocalSTS.metadata = metadata
    task = LocalSTS()
    task.pairs = pairs  # run() lets the cell encoders reuse twodmse eval's cached embeddings of these pairs
    return task


def task_names(spec, lists=TASK_LISTS):
    """'default' | 'paper' (lists in twodmse/mteb_tasks.yaml) | 'NAME,NAME' -> MTEB task names."""
    import yaml
    if "," not in spec and Path(lists).is_file():
        named = yaml.safe_load(Path(lists).read_text()) or {}
        if spec in named:
            return list(named[spec])
    if spec in ("default", "paper"):
        raise util.UserError(f"task list '{spec}' needs {lists}; pass task names instead, "
                             "e.g. --tasks STSBenchmark,SICK-R")
    return [ALIASES.get(n.strip(), n.strip()) for n in spec.split(",") if n.strip()]


def get_task(name, **kw):
    """mteb.get_task, with an unknown name as a UserError (MTEB's message suggests close names)."""
    import mteb
    try:
        return mteb.get_task(name, **kw)
    except KeyError as e:
        raise util.UserError(f"--tasks: {str(e.args[0] if e.args else name).removeprefix('KeyError: ')}") from None


def build_tasks(names, source="auto", mirror=None):
    """MTEB task objects and a {name: reason} dict of the tasks that cannot run here."""
    from . import data
    use_hub = {"hub": True, "local": False}.get(source)
    # checked up front, so an offline machine skips hub tasks at once instead of waiting in the datasets retry loop
    use_hub = util.hub_reachable() if use_hub is None else use_hub
    why = "--source local is set" if source == "local" else "the hub is offline or unreachable"
    tasks, skipped = [], {}
    for name in names:
        if use_hub:  # English subsets only (STS17 en-en, STS22 en)
            tasks.append(get_task(name, languages=["eng"], exclusive_language_filter=True))
        elif name in LOCAL_STS and data.available(LOCAL_STS[name], mirror=mirror):
            tasks.append(local_task(name, data.load_eval(LOCAL_STS[name], None, "auto", mirror)))
        elif name in LOCAL_STS:
            skipped[name] = f"no local copy (see twodmse/data.py) and {why}"
        else:
            get_task(name)  # unknown names fail here, with MTEB's did-you-mean
            skipped[name] = f"only on the Hugging Face hub and {why}; local: {', '.join(LOCAL_STS)}"
    return tasks, skipped


def _fresh(results, task, meta):
    """The cached result of this cell if it was computed on exactly this data, else None.
    (MTEB itself reuses a complete cached result even when the dataset revision changed.)"""
    old = results.load_task_result(task.metadata.name, meta)
    if old is None or old.dataset_revision != task.metadata.revision:
        return None
    return None if old.get_missing_evaluations(task) else old


def evaluate_cells(store, tasks, cells, results, name, progress=True):
    """Run every (layer, dim) cell on every task through mteb.evaluate -> tidy DataFrame."""
    import mteb
    from tqdm.auto import tqdm
    rows = []
    for task in tasks:
        for layer, dim in tqdm(cells, desc=task.metadata.name, unit="cell", disable=not progress):
            meta = cell_meta(name, store.checkpoint_hash, layer, dim, store.pooling, store.max_length)
            result = _fresh(results, task, meta)
            if result is None:
                if not task.data_loaded:
                    task.load_data()  # once for all cells, not once per mteb.evaluate call
                # cache=None: we checked freshness above and save once below (MTEB would save twice)
                result = mteb.evaluate(make_cell_encoder(store, layer, dim, meta), task, cache=None,
                                       co2_tracker=False, show_progress_bar=False,
                                       encode_kwargs={"batch_size": store.batch_size}).task_results[0]
                results.save_to_cache(result, meta, encode_kwargs={"batch_size": store.batch_size})
                result = _fresh(results, task, meta)  # as saved (rounded), so reruns match exactly
            rows.append({"task": task.metadata.name, "layer": layer, "dim": dim,
                         "main_score": result.get_score(), "metric": task.metadata.main_score,
                         "model": name, "revision": store.checkpoint_hash})
        if task.data_loaded:
            task.unload_data()
        store.memo.clear()  # the next task shares no texts; free the memory
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


EXPERIMENT = re.compile(r"^dim_(\d+)__layer_(\d+)__")  # cell_meta's experiment folder, as MTEB names it


def read_results(out, name):
    """{(task, layer, dim): main score} of model `name` read back from OUT/results/ with MTEB's own loading API
    (mteb.ResultCache(OUT).load_results, one ModelResult per cell, its experiment name naming the cell)."""
    import mteb
    loaded = mteb.ResultCache(Path(out)).load_results(models=[name], require_model_meta=False, include_remote=False,
                                                      load_experiments="match_name")
    scores = {}
    for model in loaded.model_results:
        if (cell := EXPERIMENT.match(model.experiment_name or "")) is None:
            continue
        for task in model.task_results:
            scores[(task.task_name, int(cell[2]), int(cell[1]))] = task.get_score()
    return scores


def run(model, tasks="default", out="results/mteb", layers=None, dims=None, cache_dir=None,
        pooling=None, max_length=128, batch_size=64, device=None, source="auto", mirror=None,
        name=None, progress=True):
    """Score cells of `model` on MTEB tasks; write OUT/mteb_scores.csv -> (DataFrame, info)."""
    import mteb
    if batch_size < 1 or max_length < 1:
        raise util.UserError(f"batch size and max length must be >= 1; got {batch_size} and {max_length}")
    store = AllLayers(model, pooling, max_length, cache_dir, batch_size, device, progress=progress)
    config, max_length = store.config, store.max_length
    layers = util.check_cells(layers or backbone.all_layers(config.num_hidden_layers), config.num_hidden_layers,
                              "layers", "--layers")
    dims = util.check_cells(dims or default_dims(config.hidden_size), config.hidden_size, "widths",
                            "--dims")
    name = name or f"twodmse/{Path(str(model).rstrip('/')).name}"
    names = task_names(tasks) if isinstance(tasks, str) else list(tasks)
    task_objs, skipped = build_tasks(names, source, mirror)
    for task_name, reason in skipped.items():
        print(f"skipping {task_name}: {reason}", file=sys.stderr)
    if not task_objs:
        raise util.UserError(f"--tasks {tasks}: no task can run here ({len(skipped)} skipped, reasons above). Fix: "
                             "connect to the Hugging Face hub, or give the STS tasks a local copy (--mirror DIR "
                             "or TWODMSE_DATA, layout in README)")
    for task in task_objs:
        if hasattr(task, "pairs"):
            store.share(cache_label(task.metadata.name, "default", "test"), task.pairs)
    results = mteb.ResultCache(Path(out))
    cells = [(n, d) for n in layers for d in dims]
    df = evaluate_cells(store, task_objs, cells, results, name, progress)
    util.write_csv(Path(out) / "mteb_scores.csv", df)
    info = {"model": model, "model_path": str(store.path), "mteb_name": name,
            "revision": store.checkpoint_hash, "pooling": store.pooling, "max_length": max_length,
            "layers": layers, "dims": dims, "tasks": [t.metadata.name for t in task_objs],
            "task_revisions": {t.metadata.name: t.metadata.revision for t in task_objs},
            "skipped": skipped, "results_dir": str(results.cache_path / "results"),
            "encodes": store.encodes, "model_loaded": store.encoder.cache_info().currsize > 0}
    return df, info


def _run(args):
    import logging
    logging.getLogger("mteb").setLevel(logging.ERROR)  # per-cell notices would bury the progress bars
    started = time.time()
    with util.output_lock(args.out):
        df, info = run(args.model, args.tasks, args.out, args.layers, args.dims,
                       args.cache, args.pooling, args.max_length, args.batch_size, args.device,
                       args.source, args.mirror, args.name)
        info["wall_s"] = round(time.time() - started, 2)
        util.write_json(Path(args.out) / "mteb_run.json", util.provenance(
            {k: v for k, v in vars(args).items() if k != "func"}, **info))
    best = df.loc[df.groupby("task").main_score.idxmax()]
    for r in best.itertuples():
        print(f"{r.task:>28s} best {r.metric} {r.main_score:.4f} at layer {r.layer} dim {r.dim}")
    print(f"wrote {Path(args.out) / 'mteb_scores.csv'} ({len(df)} rows), mteb_run.json, "
          f"and MTEB's JSON under {info['results_dir']}")


def add_cli(sub):
    import argparse
    p = sub.add_parser(
        "mteb", help="score every (layer, dim) cell of a model with MTEB",
        description="Run MTEB tasks on every layer x width cell of a checkpoint. Each task is encoded "
                    "once at all layers (embeddings cached by checkpoint content hash); every cell is "
                    "a slice of that, scored by MTEB itself and saved in MTEB's results layout with "
                    "the content hash as revision, so checkpoints never share scores.",
        epilog="Examples:\n"
               "  twodmse mteb --out results/mteb-minilm                   # default STS tasks\n"
               "  twodmse mteb --model runs/full/model --tasks paper --out results/mteb-full\n"
               "  twodmse mteb --tasks STSBenchmark,SICK-R --layers 3,6 --dims 384,64 --out /tmp/m\n"
               "Outputs: DIR/mteb_scores.csv (task, layer, dim, main_score, metric, model, revision),\n"
               "DIR/mteb_run.json (provenance) and MTEB's JSON under DIR/results/, one experiment\n"
               "folder per cell: mteb.ResultCache(DIR).load_results(load_experiments='match_name').\n"
               "Rerunning into the same DIR reuses finished cells. Offline (HF_HUB_OFFLINE=1 or no\n"
               "network) the STS tasks run as '<Name>-local' copies built from twodmse.data (mirror,\n"
               "embedded STS-B); tasks with no local copy are skipped with a message.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=backbone.DEFAULT_MODEL, help="hub id or local folder")
    p.add_argument("--tasks", default="default",
                   help="'default' (STS), 'paper' (STS + classification, clustering, retrieval; "
                        "lists in twodmse/mteb_tasks.yaml) or comma-separated MTEB task names")
    p.add_argument("--out", required=True, help="output folder (CSV, provenance, MTEB results)")
    p.add_argument("--layers", type=util.int_list, help="comma list of layers (default: all)")
    p.add_argument("--dims", type=util.int_list,
                   help="comma list of widths (default: the hidden size and the powers of two below it down to 8)")
    p.add_argument("--cache", help="embedding cache folder (default $TWODMSE_CACHE or ~/.cache/twodmse)")
    p.add_argument("--source", default="auto", choices=["auto", "hub", "local"],
                   help="auto: MTEB's hub tasks when the hub answers, else local STS copies")
    p.add_argument("--mirror", help="data mirror folder (default $TWODMSE_DATA or ../shared/data)")
    p.add_argument("--name", help="model name in MTEB results (default twodmse/<model basename>)")
    p.add_argument("--pooling", choices=backbone.POOLINGS, help="default: as the model folder declares")
    p.add_argument("--max-length", type=util.positive_int, default=128, help="tokens per text (default 128)")
    p.add_argument("--batch-size", type=util.positive_int, default=64, help="texts per forward pass (default 64)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=_run)
