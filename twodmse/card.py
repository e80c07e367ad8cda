"""Model cards: a README.md in the Hugging Face hub / sentence-transformers style for a trained checkpoint.

Built from a run's results folder alone (grid.csv, grid.json, bootstrap.npz, train_info.json), with
huggingface_hub's ModelCard and ModelCardData: library_name, base_model, datasets, tags and a `model-index` holding
the Spearman (x100) of every (layer, dim) cell on every test set, each named so the cell can be read back
(metric_config "layers=3,dim=128"). The text has the grid with its 95% intervals, how to load any cell, the training
config and the provenance. The same inputs render the same card (nothing in it is read from the clock).

    twodmse card --run results/minilm/2dmse/seed42                 # writes results/minilm/2dmse/seed42/README.md
    twodmse card --run results/minilm/2dmse/seed42 --model runs/minilm/2dmse/seed42/model   # and a copy there

A card in the model folder is part of the folder's content hash, which keys the embedding cache and MTEB's revision:
add it when the model is done (before publishing), not while its evaluations still run.
"""
import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import util
from .data import HUB_IDS

CELL = re.compile(r"^layers=(\d+),dim=(\d+)$")  # how a model-index entry names its cell (metric_config)
TRAIN_DATASETS = {"stsb": "sentence-transformers/stsb", "nli": "SeanLee97/nli_for_simcse"}
FILE = "README.md"


def cell_name(layer, dim):
    return f"layers={layer},dim={dim}"


def read_run(run):
    """(test rows of grid.csv, grid.json, train_info.json, bootstrap replicates or None) of a results folder."""
    run = Path(run)
    for name in ("grid.csv", "grid.json", "train_info.json"):
        if not (run / name).is_file():
            raise util.UserError(f"--run {run}: no {name}; a card is made from a trained run's results folder "
                                 "(twodmse train, then twodmse eval --out that folder)")
    grid = pd.read_csv(run / "grid.csv")
    grid = grid[grid.split != "dev"]
    if grid.empty:
        raise util.UserError(f"--run {run}: grid.csv has no test scores (only dev); score it with twodmse eval")
    boot = None
    if (run / "bootstrap.npz").is_file():
        from .stats import load_bootstrap
        boot = load_bootstrap(run / "bootstrap.npz")
    return grid, json.loads((run / "grid.json").read_text()), json.loads((run / "train_info.json").read_text()), boot


def eval_results(grid):
    """One EvalResult per test set and cell: the model-index."""
    from huggingface_hub import EvalResult
    rows = grid.sort_values(["dataset", "layer", "dim"], ascending=[True, False, False])
    return [EvalResult(task_type="semantic-similarity", task_name="Semantic Similarity",
                       dataset_type=HUB_IDS.get(r.dataset, (r.dataset,))[0], dataset_name=r.dataset,
                       dataset_split=r.split, metric_type="spearman_cosine", metric_value=round(float(r.spearman), 4),
                       metric_name=f"Spearman x100 at {r.layer} layers, width {r.dim}",
                       metric_config=cell_name(r.layer, r.dim))
            for r in rows.itertuples()]


def grid_table(grid, boot):
    """Markdown: layers (rows, deepest first) x widths, the mean over the test sets with its 95% interval."""
    mean = grid.groupby(["layer", "dim"]).spearman.mean().unstack("dim").sort_index(ascending=False)
    dims = sorted(mean.columns, reverse=True)
    lo = hi = None
    if boot is not None:
        layer_at = {int(n): i for i, n in enumerate(boot["layers"])}
        dim_at = {int(d): j for j, d in enumerate(boot["dims"])}
        q = np.nanpercentile(boot["spearman"], [2.5, 97.5], axis=0)
        lo, hi = ({(n, d): q[k][layer_at[n], dim_at[d]] for n in layer_at for d in dim_at} for k in (0, 1))
    lines = ["| layers \\ width | " + " | ".join(map(str, dims)) + " |", "|---" * (len(dims) + 1) + "|"]
    for layer, row in mean.iterrows():
        cells = [f"{row[d]:.2f}" + (f" [{lo[layer, d]:.1f}, {hi[layer, d]:.1f}]" if lo and (layer, d) in lo else "")
                 for d in dims]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build(run, name=None):
    """The ModelCard of one results folder."""
    from huggingface_hub import ModelCard, ModelCardData
    grid, grid_info, info, boot = read_run(run)
    cfg = info.get("config", {})
    method, base = cfg.get("method", "?"), cfg.get("model", "?")
    name = name or f"{Path(str(base)).name}-{method}-seed{cfg.get('seed')}"
    data = ModelCardData(
        model_name=name, base_model=base if "/" in str(base) and not Path(str(base)).exists() else None,
        library_name="sentence-transformers", pipeline_tag="sentence-similarity", language="en",
        datasets=[TRAIN_DATASETS.get(cfg.get("train_data"), str(cfg.get("train_data")))],
        tags=["sentence-transformers", "sentence-similarity", "matryoshka", "2dmse", "twodmse", method],
        metrics=["spearman_cosine"], eval_results=eval_results(grid))
    layers, dims = sorted(set(grid.layer)), sorted(set(grid.dim))
    sets = sorted(set(grid.dataset))
    body = f"""
# {name}

`{base}` fine-tuned with twodmse's `{method}` method on `{cfg.get('train_data')}` (seed {cfg.get('seed')}). An
elastic sentence encoder is usable at every (layers, width) cell: fewer layers encode faster, fewer dimensions
store and search cheaper. The scores below say what each cell costs in quality.

{usage(method, layers[len(layers) // 2], max(layers), dims[len(dims) // 2])}
## Scores

Spearman x100 of cosine similarity, the mean over {len(sets)} test set(s) ({', '.join(sets)}), with its 95%
bootstrap interval over the test pairs where the run has one (`bootstrap.npz`); every set and cell is in the
model-index above (metric_config `layers=k,dim=d`).

{grid_table(grid, boot)}

## Training

```json
{json.dumps(cfg, indent=2, sort_keys=True, default=str)}
```

Steps: {info.get('steps')}; examples: {info.get('examples')}; wall time: {info.get('wall_time_s')} s on
{info.get('device', 'cpu')}.{' Picked by the sweep: ' + json.dumps(info['sweep'].get('picked', {}).get('values'))
                              if info.get('sweep') else ''}

## Provenance

- trained: {info.get('date')}, git commit `{info.get('git_commit')}`
- scored: {grid_info.get('date')}, git commit `{grid_info.get('git_commit')}`, checkpoint hash
  `{grid_info.get('checkpoint_hash')}`
- versions: {json.dumps(info.get('versions', {}), sort_keys=True)}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def usage(method, k, L, d):
    """How to load a cell: a separate run is one model per depth; any other, one model cut to any cell."""
    if method == "separate":
        return f"""## Use any cell

One model per depth k (`model_layers<k>/` in the run folder), each a plain sentence-transformers model cut to k
layers; cell (k, d) is that model truncated to d dimensions:

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("PATH/model_layers{k}", truncate_dim={d})   # {k} layers, width {d}
```
"""
    return f"""## Use any cell

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("PATH", truncate_dim={d})   # all {L} layers, width {d}
embeddings = model.encode(["A man is playing a guitar.", "Someone plays music."])
```

Fewer layers (the layers above k are dropped, so encoding costs k layers; an exit head, if the model has one, is
applied), as a plain sentence-transformers folder:

```bash
twodmse export --model PATH --layers {k} --dim {d} --out cell   # then SentenceTransformer("cell")
```

or in Python: `twodmse.load("PATH", layers={k}, dim={d}).encode([...])`.
"""


def cell_card(model, layers, dim, head):
    """The card of one exported cell (twodmse export): what it is cut from and how to load it. Its scores are in the
    card of the run it came from (the full grid); this folder is one cell of it."""
    from huggingface_hub import ModelCard, ModelCardData
    base = model if "/" in model and not Path(model).exists() else None
    data = ModelCardData(library_name="sentence-transformers", pipeline_tag="sentence-similarity", base_model=base,
                         tags=["sentence-transformers", "sentence-similarity", "matryoshka", "2dmse", "twodmse"])
    body = f"""
# One cell of {Path(model).name}: {layers} layers, width {dim}

Cut by `twodmse export --model {model} --layers {layers} --dim {dim}`: the transformer keeps layers 1..{layers} (the
rest are not in this folder, so encoding costs {layers} layers), then a Dense module maps the pooled embedding to
{dim} dimensions ({"layer " + str(layers) + "'s exit head, cut to its first " + str(dim) + " outputs" if head else
"the first " + str(dim) + " of them"}). It loads with sentence-transformers alone:

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("PATH")
embeddings = model.encode(["A man is playing a guitar.", "Someone plays music."])   # [2, {dim}]
```

The scores of this cell and of every other are in the model card of the run it was cut from (`twodmse card`).
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def read_cells(card):
    """{(dataset, layer, dim): Spearman x100} from a card's model-index."""
    out = {}
    for r in card.data.eval_results or []:
        if (m := CELL.match(r.metric_config or "")) is not None:
            out[(r.dataset_name, int(m[1]), int(m[2]))] = r.metric_value
    return out


def write(run, model=None, name=None):
    """Write README.md into the results folder (and into the model folder when given); returns the paths."""
    text = str(build(run, name))
    paths = [Path(run) / FILE] + ([Path(model) / FILE] if model else [])
    for path in paths:
        util.write_text(path, text)
    return paths


def add_cli(subparsers):
    p = subparsers.add_parser(
        "card", help="a model card (README.md) from a trained run's results",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="results folder with grid.csv, grid.json, train_info.json")
    p.add_argument("--model", help="the trained model folder: a copy of the card goes there too (changing the "
                                   "folder's content hash: do it when the model is done)")
    p.add_argument("--name", help="model name in the card (default: <backbone>-<method>-seed<k>)")
    p.set_defaults(func=run_cli)


def run_cli(args):
    for path in write(args.run, args.model, args.name):
        print(f"wrote {path}")
