# Config checks, wildcards and the small helpers the rules share.
import math
import re
import sys
from collections import namedtuple
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from twodmse import methods as twodmse_methods
from twodmse.cells import CELL_SETS

# workflow/, found from this file (workflow.basedir is the folder of the entry Snakefile, the repository root).
WORKFLOW_DIR = Path(str(workflow.current_basedir)).parent
# workflow/schemas/: ../schemas/ from this file, where validate() resolves a relative path. One path for all checks.
SCHEMA = WORKFLOW_DIR / "schemas" / "config.schema.yaml"
# Its `train` keys, generated from twodmse's declaration (twodmse/train_config.py CONFIG).
TRAIN_KEYS = yaml.safe_load((SCHEMA.parent / "train_keys.schema.yaml").read_text())


def did_you_mean(key, known):
    """' (did you mean 'x'?)' for the known key nearest a misspelt one, or ''. Of equally close keys, the one
    sharing the longest start: 'seed' -> 'seeds', not 'speed'."""
    import difflib
    import os
    key = str(key)
    close = difflib.get_close_matches(key, known, n=3)
    near = max(close, default=None, key=lambda k: (difflib.SequenceMatcher(None, key, k).ratio(),
                                                    len(os.path.commonprefix([key, k]))))
    return f" (did you mean '{near}'?)" if near else ""


def check_top_level_keys(cfg, schema, schema_file):
    """Stop on a key the schema does not allow at the top level (a typo), naming the nearest known key.

    Without this, validate() reports an unknown key with the whole schema (hundreds of lines)."""
    if schema.get("additionalProperties", True) is not False:
        return  # the schema allows extra keys
    known = list(schema.get("properties", {}))
    lines = [f"unknown key '{key}'{did_you_mean(key, known)}" for key in cfg if key not in known]
    if lines:
        raise WorkflowError("Error validating config file: " + "; ".join(lines) + ".\n"
                            f"Known top-level keys: {', '.join(known)} (see {schema_file}).")


def validate_config(cfg, schema, schema_file):
    """validate() with its error cut to the failing key and the reason (it would print the whole schema)."""
    from jsonschema.exceptions import ValidationError
    if workflow.modifier.skip_validation:  # a `module` with skip_validation: validate() would skip too
        return
    check_top_level_keys(cfg, schema, schema_file)
    try:
        validate(cfg, str(schema_file))
    except WorkflowError as error:
        problem = error.__context__  # validate raises its WorkflowError while handling jsonschema's error
        if not isinstance(problem, ValidationError):
            raise
        key = ".".join(map(str, problem.absolute_path))
        raise WorkflowError(f"Error validating config file ({schema_file}):\n"
                            + (f"config key '{key}': " if key else "config: ") + problem.message) from None


def check_sweep(cfg):
    """Stop on a bad `sweep:` (a key that is not a train key, no values) with one line naming the key and the fix.

    Checked before validate(), whose messages for these cases do not say what a sweep needs."""
    from jsonschema.validators import validator_for

    sweep = cfg.get("sweep")
    if sweep is None:
        return
    example = "e.g. sweep: {lr: [2.0e-5, 5.0e-5, 1.0e-4]}"
    if not isinstance(sweep, dict) or not sweep:
        raise WorkflowError(f"config key 'sweep': name at least one `train` key with a list of values, {example}; "
                            "or remove `sweep` to train each method once")
    keys = list(TRAIN_KEYS["properties"])
    for key, values in sweep.items():
        if key not in keys:
            raise WorkflowError(f"config key 'sweep': '{key}' is not a `train` key{did_you_mean(key, keys)}; "
                                f"a sweep varies keys of `train`: {', '.join(keys)}")
        if not isinstance(values, list) or not values:
            raise WorkflowError(f"config key 'sweep.{key}': give a non-empty list of values to try, {example}; "
                                f"or remove '{key}' from `sweep`")
        # --config passes nested values as text ('1.0e-4'): read each as a config file would, then check it as
        # the train key's own value (the rest of `train` is checked by validate()).
        sweep[key] = values = [yaml.safe_load(v) if isinstance(v, str) else v for v in values]
        check = validator_for(TRAIN_KEYS)(TRAIN_KEYS["properties"][key])
        for value in values:
            if (error := next(iter(check.iter_errors(value)), None)) is not None:
                raise WorkflowError(f"config key 'sweep.{key}': {error.message}" + (
                    " (write numbers as 2.0e-5: YAML reads 2e-5 as text)" if isinstance(value, str) else ""))


SCHEMA_DOC = yaml.safe_load(SCHEMA.read_text())
if isinstance(config.get("sweep_settle"), str):  # --config sweep_settle=true passes text
    config["sweep_settle"] = yaml.safe_load(config["sweep_settle"])
if isinstance(config.get("seeds"), list):  # --config 'seeds=[42,43]' passes each seed as text
    config["seeds"] = [yaml.safe_load(s) if isinstance(s, str) else s for s in config["seeds"]]
check_sweep(config)
validate_config(config, SCHEMA_DOC, SCHEMA)

UNTRAINED = "untrained"  # the backbone evaluated as is; no seed, so it lives in seed0/
TRAINING_METHODS = twodmse_methods.names()  # the registry: one file per method in twodmse/methods/
# A backbone whose id matches this is built by rule tiny_backbone (random weights, for CI).
TINY_BACKBONE = re.compile(r"runs/backbones/tiny-bert-(\d+)x(\d+)")

BACKBONES = config["backbones"]
METHODS = config["methods"]
SEEDS = config["seeds"]
SETTINGS = config["method_settings"]
TRAINED = [m for m in METHODS if m != UNTRAINED]


def owner(name):
    """The method name a run name belongs to: m for m, a sweep candidate "m/sweep/lr=1e-4" and a settle run
    "m/settle/rank1" (a method name has no '/')."""
    return re.split(r"/(?:sweep|settle)/", name)[0]


def base_method(name):
    """The training method behind a method name (itself, or what a variant names), or behind a run name's method."""
    name = owner(name)
    return SETTINGS.get(name, {}).get("method", name)


# method_settings keys of the workflow's own, not `twodmse train` keys: left out of every run's training config.
WORKFLOW_KEYS = ("method", "select_on", "seeds")


def method_seeds(method):
    """The seeds a method (or one of its run names) is trained at: method_settings.<m>.seeds, else `seeds`."""
    return SETTINGS.get(owner(method), {}).get("seeds") or SEEDS


def select_target(method):
    """The cells a method's sweep picks on: method_settings.<m>.select_on, else its method file's SELECT_ON."""
    return SETTINGS.get(method, {}).get("select_on") or twodmse_methods.select_on(base_method(method))


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
    for name in TRAINED:
        if select_target(name) == "each-depth" and base_method(name) != "separate":
            raise WorkflowError(f"config key 'method_settings.{name}.select_on': each-depth picks each depth's model "
                                f"on its own, and only separate has one model per depth; choose one of "
                                f"{', '.join(k for k in CELL_SETS if k != 'each-depth')}")


check_methods()


# ---------------------------------------------------------------- sweep
# With `sweep: {key: [values]}` every trained method m is trained once per combination of values: the candidate
# "m/sweep/<key>=<value>[,<key>=<value>...]", a run name like a method's (runs/<b>/m/sweep/lr=1e-4/seed<k>).
# Candidates are scored on STS-B dev; rule select picks each method's best by dev grid mean and rule sweep_pick
# makes the picked candidate run m itself (runs/<b>/m/seed<k>), which is evaluated and reported as usual.
SWEEP = config.get("sweep") or {}


def value_text(v):
    """A swept value as written in a folder name: 1e-4, 2e-5, 32, cls."""
    if isinstance(v, float):
        mantissa, exponent = f"{v:.6e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}" if not -2 <= int(exponent) <= 5 else f"{v:g}"
    return str(v)


def sweep_candidates():
    """{candidate name: (method, {key: value})}, each method's candidates in the order of the values."""
    import itertools
    combos = [dict(zip(SWEEP, values)) for values in itertools.product(*SWEEP.values())] if SWEEP else []
    candidates = {}
    for m in TRAINED:
        for values in combos:
            cand = ",".join(f"{k}={value_text(v)}" for k, v in values.items())
            if not re.fullmatch(r"[A-Za-z0-9_.+=,-]+", cand):
                raise WorkflowError(f"config key 'sweep': value(s) {values} do not make a folder name "
                                    f"('{cand}'); use numbers or plain words")
            candidates[f"{m}/sweep/{cand}"] = (m, values)
    return candidates


CANDIDATES = sweep_candidates()
# The seeds the candidates are trained at (scored on dev); at the other seeds each method trains its pick afresh.
SWEEP_SEEDS = (config.get("sweep_seeds") or SEEDS) if CANDIDATES else []
PICKED_SEEDS = [s for s in SEEDS if s not in SWEEP_SEEDS] if CANDIDATES else []
# sweep_settle: the two best candidates at the sweep seeds are both trained at the other seeds too (the settle runs
# "m/settle/rank1", "m/settle/rank2", scored on STS-B dev), and the pick is the better mean over all seeds; the pick's
# runs at those seeds are then the method's own (rule sweep_pick links them), so only the runner-up costs extra.
SETTLE = bool(config.get("sweep_settle")) and bool(PICKED_SEEDS)
SETTLE_RANKS = list(range(1, 1 + min(2, math.prod(map(len, SWEEP.values()))))) if SETTLE else []
if set(SWEEP_SEEDS) - set(SEEDS):
    raise WorkflowError(f"config key 'sweep_seeds': {sorted(set(SWEEP_SEEDS) - set(SEEDS))} not in `seeds` "
                        f"{SEEDS}; sweep_seeds picks which of the study's seeds the sweep runs on")


def check_method_seeds():
    """method_settings.<m>.seeds: some of `seeds`, and (with a sweep) every sweep seed, where its candidates train."""
    for m in TRAINED:
        own = SETTINGS.get(m, {}).get("seeds") or SEEDS
        if set(own) - set(SEEDS):
            raise WorkflowError(f"config key 'method_settings.{m}.seeds': {sorted(set(own) - set(SEEDS))} not in "
                                f"`seeds` {SEEDS}; a method's seeds are some of the study's seeds")
        if missing := [s for s in SWEEP_SEEDS if s not in own]:
            raise WorkflowError(f"config key 'method_settings.{m}.seeds': lacks sweep seed(s) {missing}; every "
                                f"method's candidates are trained at the sweep seeds {SWEEP_SEEDS}, so its seeds "
                                "must include them")


check_method_seeds()


def picked_seeds(method):
    """A method's seeds past the sweep's: its pick is trained there (by its settle runs, with sweep_settle)."""
    return [s for s in method_seeds(method) if s not in SWEEP_SEEDS] if CANDIDATES else []


def settles(method):
    """Whether a method's pick is settled: sweep_settle, and the method has seeds past the sweep's."""
    return SETTLE and bool(picked_seeds(method))


def check_dev_split():
    """A sweep selects on STS-B dev: stop before planning when it cannot be read here."""
    from twodmse import data
    if CANDIDATES and not data.available("stsb", split="dev"):
        raise WorkflowError("config key 'sweep': the sweep scores every candidate on STS-B dev, which is not "
                            "readable here (no data mirror with stsb dev and no embedded copy); set TWODMSE_DATA "
                            "to a data mirror that has it, or remove `sweep` from the config")


check_dev_split()


# What `train` trains: the methods; with a sweep, their candidates (at SWEEP_SEEDS, where rule sweep_pick makes the
# methods' runs from the picks) and the methods at PICKED_SEEDS (with the picked values, read from selection.json).
def settle_runs(method):
    return [f"{method}/settle/rank{r}" for r in SETTLE_RANKS] if settles(method) else []


SETTLE_RUNS = [run for m in TRAINED for run in settle_runs(m)]
# The seeds where sweep_pick links a method's run to its pick's (the sweep's and the settle runs' seeds); none with
# sweep_picks: retrain, where every run of a method is trained afresh with its picks.
LINKED_SEEDS = [] if config["sweep_picks"] == "retrain" else SWEEP_SEEDS + (PICKED_SEEDS if SETTLE else [])
# With a sweep, `train` trains the candidates, the settle runs and the methods' runs at the seeds not linked.
TRAIN_RUNS = list(CANDIDATES) + SETTLE_RUNS + (TRAINED if set(SEEDS) - set(LINKED_SEEDS) else []) \
    if CANDIDATES else TRAINED
SEPARATE = [m for m in TRAINED if base_method(m) == "separate"]
SINGLE = [m for m in TRAINED if m not in SEPARATE]  # one model folder per run
SEPARATE_CANDIDATES = [c for c in CANDIDATES if base_method(c) == "separate"]
SINGLE_CANDIDATES = [c for c in CANDIDATES if c not in SEPARATE_CANDIDATES]
SEPARATE_SETTLE = [r for r in SETTLE_RUNS if base_method(r) == "separate"]
SINGLE_SETTLE = [r for r in SETTLE_RUNS if r not in SEPARATE_SETTLE]


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
    return [0] if method == UNTRAINED else method_seeds(method)


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
    """Shared train keys, then the method's overrides, then (for a sweep candidate) the swept values."""
    method, swept = CANDIDATES.get(w.method, (owner(w.method), {}))
    settings = {k: v for k, v in SETTINGS.get(method, {}).items() if k not in WORKFLOW_KEYS}
    return {**config["train"], **settings, **swept,
            "model": backbone_model(w.backbone), "method": base_method(w.method), "seed": int(w.seed)}


# separate's own options (twodmse/methods/separate.py): the baseline twin of its full depth does not have them.
SEPARATE_ONLY_OPTIONS = ("depths", "per_depth", "top_model")


def as_baseline(settings):
    """A run's settings as its full depth's baseline has them: method baseline, without separate's own options."""
    options = {k: v for k, v in (settings.get("method_options") or {}).items() if k not in SEPARATE_ONLY_OPTIONS}
    return {**settings, "method": "baseline", "method_options": options}


def baseline_twin(w):
    """For a `separate` run: a baseline run in `methods` with the same settings, or None. Its model is exactly
    separate's full-depth model (same loss, data, seed), so separate copies it instead of training it again."""
    if base_method(w.method) != "separate" or (CANDIDATES and w.method not in CANDIDATES):
        return None  # a method's run at a PICKED_SEEDS seed: its values (and its twin's) are known only at run time
    want = as_baseline(run_settings(w))
    for m in (SINGLE_CANDIDATES if CANDIDATES else SINGLE):  # a candidate's twin is a candidate
        twin = Run(w.backbone, m, w.seed)
        if base_method(m) == "baseline" and as_baseline(run_settings(twin)) == want:
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
    runs = [(m, s) for m in CANDIDATES for s in SWEEP_SEEDS] if CANDIDATES else \
        [(m, s) for m in TRAINED for s in method_seeds(m)]
    return {f"{b}/{m}/seed{s}": run_config(Run(b, m, str(s))) for b in BACKBONES for m, s in runs}


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
    specs |= set(SWEEP.get("train_data", []))
    return sorted(specs) if TRAINED else []


# ---------------------------------------------------------------- targets


def grids():
    return [f"{d}/grid.csv" for d in result_dirs()]


def train_records():
    return [f"{d}/train_info.json" for d in result_dirs(TRAINED)]


def model_cards():
    return [f"{d}/README.md" for d in result_dirs(TRAINED)]


def speed_tables():
    return [f"results/{b}/speed/speed.csv" for b in BACKBONES] if config["speed"]["enabled"] else []


def mteb_tables():
    if not config["mteb"]["enabled"]:
        return []
    return [f"{d}/mteb/mteb_scores.csv" for d in result_dirs([m for m in METHODS if m not in SEPARATE])]


def sweep_selections():
    """results/<backbone>/<method>/sweep/selection.json of every swept method."""
    return [f"results/{b}/{m}/sweep/selection.json" for b in BACKBONES for m in TRAINED] if CANDIDATES else []


def picked_values_input(w):
    """A method's run at a PICKED_SEEDS seed is configured with the values its sweep selection picked, a settle run
    with those of its rank in the method's shortlist."""
    if w.method in SETTLE_RUNS:
        return [f"results/{w.backbone}/{owner(w.method)}/sweep/shortlist.json"]
    return [f"results/{w.backbone}/{w.method}/sweep/selection.json"] if CANDIDATES and w.method in TRAINED else []


def settle_grids(w):
    """{rank: {seed: dev grid.csv}} of a method's settle runs (none without sweep_settle)."""
    return {r: {s: f"results/{w.backbone}/{w.method}/settle/rank{r}/seed{s}/grid.csv" for s in picked_seeds(w.method)}
            for r in SETTLE_RANKS} if settles(w.method) else {}


def candidates_of(method):
    return [c for c, (m, _) in CANDIDATES.items() if m == method]


def dev_eval_args():
    """A sweep candidate is scored on STS-B dev at every cell (the widths, pooling and lengths of `eval`)."""
    e = config["eval"]
    return " ".join(filter(None, [
        "--datasets stsb --split dev", f"--batch-size {e['batch_size']} --max-length {e['max_length']}",
        csv_arg("--dims", e["dims"]), pooling_arg(), "--cache cache/embeddings"]))


def run_eval_args(w):
    return dev_eval_args() if w.method in CANDIDATES or w.method in SETTLE_RUNS else eval_args()
