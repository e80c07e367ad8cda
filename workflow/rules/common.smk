# Config checks, wildcards and the small helpers the rules share.
import re
import sys
from collections import namedtuple
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from twodmse import methods as twodmse_methods

# workflow/, found from this file (workflow.basedir is the folder of the entry Snakefile, the repository root).
WORKFLOW_DIR = Path(str(workflow.current_basedir)).parent
# workflow/schemas/: ../schemas/ from this file, where validate() resolves a relative path. One path for both checks.
SCHEMA = WORKFLOW_DIR / "schemas" / "config.schema.yaml"


def check_top_level_keys(cfg, schema_file):
    """Stop on a key the schema does not allow at the top level (a typo), naming the nearest known key.

    Without this, validate() reports an unknown key with the whole schema (hundreds of lines)."""
    import difflib
    import os
    import yaml

    def nearest(key):
        # Of equally close keys, the one sharing the longest start: 'seed' -> 'seeds', not 'speed'.
        close = difflib.get_close_matches(key, known, n=3)
        return max(close, default=None, key=lambda k: (difflib.SequenceMatcher(None, key, k).ratio(),
                                                        len(os.path.commonprefix([key, k]))))

    schema = yaml.safe_load(Path(schema_file).read_text())
    if schema.get("additionalProperties", True) is not False:
        return  # the schema allows extra keys
    known = list(schema.get("properties", {}))
    lines = []
    for key in cfg:
        if key not in known:
            near = nearest(str(key))
            lines.append(f"unknown key '{key}'" + (f" (did you mean '{near}'?)" if near else ""))
    if lines:
        raise WorkflowError("Error validating config file: " + "; ".join(lines) + ".\n"
                            f"Known top-level keys: {', '.join(known)} (see {schema_file}).")


def validate_config(cfg, schema_file):
    """validate() with its error cut to the failing key and the reason (it would print the whole schema)."""
    from jsonschema.exceptions import ValidationError
    if workflow.modifier.skip_validation:  # a `module` with skip_validation: validate() would skip too
        return
    check_top_level_keys(cfg, schema_file)
    try:
        validate(cfg, str(schema_file))
    except WorkflowError as error:
        problem = error.__context__  # validate raises its WorkflowError while handling jsonschema's error
        if not isinstance(problem, ValidationError):
            raise
        key = ".".join(map(str, problem.absolute_path))
        raise WorkflowError(f"Error validating config file ({schema_file}):\n"
                            + (f"config key '{key}': " if key else "config: ") + problem.message) from None


validate_config(config, SCHEMA)

UNTRAINED = "untrained"  # the backbone evaluated as is; no seed, so it lives in seed0/
TRAINING_METHODS = twodmse_methods.names()  # the registry: one file per method in twodmse/methods/
# A backbone whose id matches this is built by rule tiny_backbone (random weights, for CI).
TINY_BACKBONE = re.compile(r"runs/backbones/tiny-bert-(\d+)x(\d+)")

BACKBONES = config["backbones"]
METHODS = config["methods"]
SEEDS = config["seeds"]
SETTINGS = config["method_settings"]


def base_method(name):
    """The training method behind a method name (itself, or what a variant names)."""
    return SETTINGS.get(name, {}).get("method", name)


def check_methods():
    for name in METHODS:
        if name != UNTRAINED and base_method(name) not in TRAINING_METHODS:
            raise ValueError(
                f"config: method '{name}' is not {UNTRAINED} or a training method "
                f"({', '.join(TRAINING_METHODS)}); if it is a variant, add it under method_settings "
                f"with `method:` naming the method it varies")
    for name in SETTINGS:
        if name not in METHODS and name not in TRAINING_METHODS:
            print(f"note: variant method_settings.{name} is not in `methods`, so it is not run", file=sys.stderr)
    if UNTRAINED in SETTINGS:
        raise ValueError(f"config: method_settings.{UNTRAINED}: the untrained backbone has no training settings")


check_methods()

TRAINED = [m for m in METHODS if m != UNTRAINED]
SEPARATE = [m for m in TRAINED if base_method(m) == "separate"]
SINGLE = [m for m in TRAINED if m not in SEPARATE]  # one model folder per run


def one_of(names):
    """Regex matching exactly these names; matches nothing for an empty list."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    backbone=one_of(BACKBONES),
    seed=r"\d+",


# The twodmse next to this Snakemake's Python is the fallback when no environment is activated
# (e.g. `.venv/bin/snakemake ...`): appended, so an activated or --use-conda environment comes first.
shell.prefix(f'set -euo pipefail; export PATH="$PATH:{Path(sys.executable).parent}"; ')


# ---------------------------------------------------------------- paths


def run_seeds(method):
    return [0] if method == UNTRAINED else SEEDS


def result_dirs(methods=None):
    return [f"results/{b}/{m}/seed{s}" for b in BACKBONES for m in (METHODS if methods is None else methods)
            for s in run_seeds(m)]


def backbone_model(backbone):
    return BACKBONES[backbone]


def backbone_input(wildcards):
    """The backbone folder as an input when a rule of this workflow builds it, else nothing."""
    model = backbone_model(wildcards.backbone)
    return [model] if TINY_BACKBONE.fullmatch(model) else []


def run_dir(w):
    return f"runs/{w.backbone}/{w.method}/seed{w.seed}"


def model_of_run(w):
    """What to evaluate for a run: the backbone itself, or the trained model folder."""
    if w.method == UNTRAINED:
        return backbone_model(w.backbone)
    return f"{run_dir(w)}/model"


# ---------------------------------------------------------------- command-line arguments


def csv_arg(flag, values):
    return f"{flag} {','.join(map(str, values))}" if values else ""


def pooling_arg():
    # Training may set a pooling the backbone folder does not declare (AnglE's cls on bert-base-uncased);
    # the untrained backbone is then scored with that pooling too, so the comparison is like for like.
    pooling = config["train"].get("pooling")
    return f"--pooling {pooling}" if pooling else ""


def eval_args():
    e = config["eval"]
    datasets = e["datasets"] if e["datasets"] == "all" else ",".join(e["datasets"])
    return " ".join(filter(None, [
        f"--datasets {datasets}", "" if e["split"] == "standard" else f"--split {e['split']}",
        f"--batch-size {e['batch_size']} --max-length {e['max_length']}",
        csv_arg("--dims", e["dims"]), pooling_arg(), "--cache cache/embeddings"]))


def speed_args():
    s = config["speed"]
    return " ".join(filter(None, [
        f"--device {s['device']} --dtype {s['dtype']} --repeats {s['repeats']} --n-docs {s['n_docs']}",
        f"--n-latency {s['n_latency']} --batch-size {s['batch_size']}",
        csv_arg("--layers", s["layers"]), csv_arg("--dims", s["dims"])]))


def mteb_args():
    m = config["mteb"]
    return " ".join(filter(None, [
        f"--tasks {m['tasks']} --source {m['source']} --max-length {config['eval']['max_length']}",
        csv_arg("--layers", m["layers"]), csv_arg("--dims", m["dims"]), pooling_arg(),
        "--cache cache/embeddings"]))


def train_command():
    launcher = config["launcher"].strip()
    return f"{launcher} -m twodmse.cli train" if launcher else "twodmse train"


Run = namedtuple("Run", "backbone method seed")  # the wildcards of one run, outside a job


def run_settings(w):
    """Shared train keys, then the method's overrides."""
    settings = dict(SETTINGS.get(w.method, {}))
    settings.pop("method", None)
    return {**config["train"], **settings,
            "model": backbone_model(w.backbone), "method": base_method(w.method), "seed": int(w.seed)}


def baseline_twin(w):
    """For a `separate` run: a baseline run in `methods` with the same settings, or None. Its model is exactly
    separate's full-depth model (same loss, data, seed), so separate copies it instead of training it again."""
    if base_method(w.method) != "separate":
        return None
    want = {**run_settings(w), "method": "baseline"}
    for m in SINGLE:
        twin = Run(w.backbone, m, w.seed)
        if base_method(m) == "baseline" and run_settings(twin) == want:
            return twin
    return None


def run_config(w):
    """The `twodmse train --config` mapping of one run."""
    cfg = run_settings(w)
    if (twin := baseline_twin(w)) is not None:
        cfg["method_options"] = {**cfg.get("method_options", {}), "top_model": f"{run_dir(twin)}/model"}
    return cfg


def twin_input(w):
    twin = baseline_twin(w)
    return [f"{run_dir(twin)}/train_info.json"] if twin else []


def all_run_configs():
    """{"<backbone>/<method>/seed<k>": run config} of every trained run."""
    return {f"{b}/{m}/seed{s}": run_config(Run(b, m, str(s))) for b in BACKBONES for m in TRAINED for s in SEEDS}


def load_script(name):
    """A module of workflow/scripts/, for `run:` blocks."""
    import importlib.util
    path = WORKFLOW_DIR / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def train_data_specs():
    """Every training set some run uses (the data check loads each once)."""
    specs = {config["train"].get("train_data", "stsb")}
    specs |= {SETTINGS[m]["train_data"] for m in TRAINED if "train_data" in SETTINGS.get(m, {})}
    return sorted(specs) if TRAINED else []


# ---------------------------------------------------------------- targets


def grids():
    return [f"{d}/grid.csv" for d in result_dirs()]


def train_records():
    return [f"{d}/train_info.json" for d in result_dirs(TRAINED)]


def speed_tables():
    return [f"results/{b}/speed/speed.csv" for b in BACKBONES] if config["speed"]["enabled"] else []


def mteb_tables():
    if not config["mteb"]["enabled"]:
        return []
    return [f"{d}/mteb/mteb_scores.csv" for d in result_dirs([m for m in METHODS if m not in SEPARATE])]
