"""The Snakemake workflow: every shipped config plans, bad configs stop with a message naming the key,
the `separate` grid is assembled from the right rows, and the CI config runs end to end.

The end-to-end test (marked e2e) takes a few minutes on 2 cores; `pytest -m "not e2e"` leaves it out."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import needs

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONFIGS = ["default", "paper", "ci"]


def snakemake(*args, cwd=REPO, env=None):
    """Run Snakemake from the repository root as a user would; the venv's twodmse is on PATH."""
    env = dict(os.environ, HF_HUB_OFFLINE="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]), **(env or {}))
    return subprocess.run([sys.executable, "-m", "snakemake", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def job_counts(stdout):
    """{rule: jobs} from the 'Job stats' table of a dry run."""
    table = stdout.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def load_config(name):
    return yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())


def validate(config):
    from snakemake.utils import validate as snakemake_validate
    snakemake_validate(config, str(SCHEMA))
    return config


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "workflow" / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- planning


@pytest.mark.parametrize("name", CONFIGS)
def test_dry_run_plans_every_run_of_the_config(name, tmp_path):
    result = snakemake("-n", "--configfile", f"configs/{name}.yaml", "-d", tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    cfg = load_config(name)
    methods, backbones, seeds = cfg["methods"], cfg["backbones"], cfg["seeds"]
    settings = cfg.get("method_settings") or {}
    trained = [m for m in methods if m != "untrained"]
    separate = [m for m in trained if settings.get(m, {}).get("method", m) == "separate"]
    n_runs = len(backbones) * len(seeds)
    counts = job_counts(result.stdout)
    assert counts["train"] == len(trained) * n_runs
    assert counts.get("combine_separate", 0) == len(separate) * n_runs
    assert counts["evaluate"] == (len(trained) - len(separate)) * n_runs + len(backbones) * ("untrained" in methods)
    assert counts.get("speed", 0) == (len(backbones) if cfg.get("speed", {}).get("enabled", True) else 0)
    assert counts.get("mteb", 0) == (counts["evaluate"] if cfg.get("mteb", {}).get("enabled") else 0)
    assert counts["report"] == counts["data_manifest"] == 1


def test_command_line_config_replaces_the_default_instead_of_merging(tmp_path):
    # ci.yaml names only the tiny backbone: MiniLM from default.yaml must not sneak into the plan.
    result = snakemake("-n", "--configfile", "configs/ci.yaml", "-d", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "results/tiny/" in result.stdout and "minilm" not in result.stdout


# ---------------------------------------------------------------- config checks


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_are_valid(name):
    validate(load_config(name))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(seedz=c.pop("seeds")), "'seedz' was unexpected"),
    (lambda c: c["train"].update(lrr=1e-4), "'lrr' was unexpected"),
    (lambda c: c["train"]["loss"].update(cosin_w=1.0), "'cosin_w' was unexpected"),
    (lambda c: c["train"].update(max_steps="four"), "'four' is not of type 'integer'"),
    (lambda c: c["train"].update(lr="2e-5"), "'2e-5' is not of type 'number'"),  # what YAML makes of 2e-5
    (lambda c: c["eval"].update(datasets=["stsb", "sts17"]), "'sts17' is not one of"),
    (lambda c: c["eval"].update(datasets="al"), "'al' does not match"),
    (lambda c: c.update(backbones={"my model": "x"}), "does not match"),
])
def test_schema_rejects_bad_config_naming_the_problem(edit, message):
    from snakemake.exceptions import WorkflowError
    cfg = load_config("default")
    edit(cfg)
    with pytest.raises(WorkflowError, match=re.escape(message)):
        validate(cfg)


def test_schema_fills_defaults_of_optional_sections():
    cfg = validate({"backbones": {"m": "x"}, "methods": ["baseline"], "seeds": [1], "train": {}, "eval": {}})
    assert cfg["eval"]["datasets"] == "all" and cfg["speed"]["enabled"] is True
    assert cfg["mteb"]["enabled"] is False and cfg["launcher"] == ""


def test_snakemake_stops_on_a_typo_before_planning(tmp_path):
    bad = tmp_path / "bad.yaml"
    cfg = load_config("ci")
    cfg["train"]["batch_sise"] = 8
    bad.write_text(yaml.safe_dump(cfg))
    result = snakemake("-n", "--configfile", bad, "-d", tmp_path / "wd")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error validating config file" in out and "'batch_sise' was unexpected" in out


def _short_config_error(result):
    """Snakemake's output of a config it refused: failed, a few lines, and no schema or config dump
    (snakemake.utils.validate alone prints the whole schema and the whole config: hundreds of lines)."""
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert len(out.splitlines()) < 15, out  # 7 lines measured: Snakemake's own 3-4 plus the message
    assert "$schema" not in out and "'properties'" not in out and "Failed validating" not in out, out
    return out


@pytest.mark.parametrize("typo, key", [("methodz", "methods"), ("seed", "seeds"), ("trian", "train")])
def test_misspelt_top_level_key_stops_with_the_nearest_key(typo, key, tmp_path):
    bad = tmp_path / "bad.yaml"
    cfg = load_config("ci")
    cfg[typo] = cfg.pop(key)  # e.g. `seed:` written for `seeds:` in a config file
    bad.write_text(yaml.safe_dump(cfg))
    out = _short_config_error(snakemake("-n", "--configfile", bad, "-d", tmp_path / "wd"))
    assert f"unknown key '{typo}' (did you mean '{key}'?)" in out
    known = yaml.safe_load(SCHEMA.read_text())["properties"]
    assert f"Known top-level keys: {', '.join(known)} " in out


def test_unknown_key_from_the_command_line_is_named_too(tmp_path):
    result = snakemake("-n", "--configfile", "configs/ci.yaml", "-d", tmp_path, "--config", "methodz=[baseline]")
    out = _short_config_error(result)
    assert "unknown key 'methodz' (did you mean 'methods'?)" in out


def test_top_level_key_check_agrees_with_the_schema():
    # The key check stops on every key the schema's `properties` lacks, as the schema itself does.
    from snakemake.exceptions import WorkflowError
    schema = yaml.safe_load(SCHEMA.read_text())
    assert schema["additionalProperties"] is False and not schema.get("patternProperties")
    cfg = load_config("ci")
    cfg["seed"] = cfg["seeds"]
    with pytest.raises(WorkflowError, match="'seed' was unexpected"):
        validate(cfg)


@pytest.mark.parametrize("args, pattern", [
    (["--config", "seeds=abc"], re.escape("config key 'seeds': 'abc' is not of type 'array'")),
    (["--config", "threads=0"], re.escape("config key 'threads': 0 is less than the minimum of 1")),
    (["--config", "train={max_steps: four}"],
     re.escape("config key 'train.max_steps': 'four' is not of type 'integer'")),
    (["--config", "train={batch_sise: 8}"], r"config key 'train': .*\('batch_sise' was unexpected\)"),
])
def test_schema_error_is_short_and_names_key_and_reason(args, pattern, tmp_path):
    result = snakemake("-n", "--configfile", "configs/ci.yaml", "-d", tmp_path, *args)
    out = _short_config_error(result)
    assert "Error validating config file" in out and re.search(pattern, out), out


def test_unknown_method_is_named_with_the_fix(tmp_path):
    bad = tmp_path / "bad.yaml"
    cfg = load_config("ci")
    cfg["methods"] = ["untrained", "2dmse-v9"]
    bad.write_text(yaml.safe_dump(cfg))
    result = snakemake("-n", "--configfile", bad, "-d", tmp_path / "wd")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "method '2dmse-v9'" in out and "method_settings" in out


def test_schema_train_keys_are_generated_from_twodmse_train():
    """The workflow's `train` keys are twodmse train's declaration (CONFIG, losses.KEYS), written out: a key, type
    or range changed there and not regenerated here fails (model, method and seed come from each run)."""
    from twodmse import losses, train_config
    keys = yaml.safe_load((SCHEMA.parent / "train_keys.schema.yaml").read_text())
    assert keys == train_config.workflow_schema(), \
        "regenerate: python -m twodmse.train_config > workflow/schemas/train_keys.schema.yaml"
    assert set(keys["properties"]) == set(train_config.CONFIG) - {"model", "method", "seed"}
    assert set(keys["properties"]["loss"]["properties"]) == set(losses.KEYS) == set(losses.DEFAULTS[2])
    assert yaml.safe_load(SCHEMA.read_text())["$defs"]["train_keys"] == {"$ref": "train_keys.schema.yaml"}


def test_the_workflow_schema_refuses_what_twodmse_train_refuses():
    """One declaration, two checkers: every bad value of every workflow train key fails the generated JSON schema
    as it fails `twodmse train`'s own check, and every default passes both."""
    from jsonschema import Draft202012Validator
    from twodmse import losses, train_config
    keys = yaml.safe_load((SCHEMA.parent / "train_keys.schema.yaml").read_text())
    for key, value in train_config.CONFIG.items():
        if key in train_config.RUN_KEYS:
            continue
        check = Draft202012Validator(keys["properties"][key])
        assert check.is_valid(value.default), key
        for bad in value.bad_values():
            if not isinstance(bad, float) or bad == bad:  # NaN: YAML and JSON schema have no NaN to refuse
                assert not check.is_valid(bad), (key, bad)
    check = Draft202012Validator(keys["properties"]["loss"])
    assert check.is_valid(losses.DEFAULTS[2]) and not check.is_valid({"cosine_tau": 0}) and not check.is_valid({"x": 1})


@pytest.mark.parametrize("name", ["default", "paper", "study-mpnet"])
def test_every_run_config_of_the_shipped_configs_passes_twodmse_train_checks(name, tmp_path):
    # Runs only the config check (no data, no model): the configs a paper run would train with are valid.
    result = snakemake("--until", "check_train_configs", "--configfile", f"configs/{name}.yaml",
                       "-d", tmp_path, "--cores", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cfg = load_config(name)
    runs = (tmp_path / "runs/train_configs.checked").read_text().split()
    # with a sweep, the runs known before it picks: every candidate at the sweep seeds
    seeds = cfg["sweep_seeds"] if "sweep" in cfg else cfg["seeds"]
    runs_per_seed = (len(cfg["methods"]) - 1) * len(cfg.get("sweep", {}).get("lr", [None]))
    assert len(runs) == len(cfg["backbones"]) * len(seeds) * runs_per_seed


def test_config_check_names_the_run_and_the_bad_option():
    check = load_script("check_train_configs")
    good = {"model": "m", "method": "mrl", "seed": 1, "method_options": {"dims": [8]}}
    assert check.problems_of("b/mrl/seed1", good) == []
    problems = check.problems_of("b/mrl/seed1", {**good, "method_options": {"dimz": [8]}})
    assert len(problems) == 1 and "b/mrl/seed1" in problems[0] and "dimz" in problems[0]
    problems = check.problems_of("b/st/seed1", {**good, "method": "st-matryoshka2d", "method_options": {},
                                                  "loss": {"cosine_w": 1.0}})
    assert len(problems) == 1 and "loss" in problems[0]


@pytest.mark.skipif(shutil.which("conda") is not None, reason="conda is installed here")
def test_use_conda_without_conda_fails_with_snakemakes_message(tmp_path):
    result = snakemake("-n", "--use-conda", "--configfile", "configs/ci.yaml", "-d", tmp_path)
    assert result.returncode != 0
    assert "Is conda installed and accessible?" in result.stdout + result.stderr


# ---------------------------------------------------------------- scripts


def _grid(layers, model, score):
    return pd.DataFrame([{"model": model, "dataset": "stsb", "split": "test", "layer": n, "dim": d,
                          "spearman": score + n, "pearson": 0.0, "n_pairs": 10}
                         for n in range(1, layers + 1) for d in (32, 16)])


def test_combine_separate_keeps_layer_k_of_the_depth_k_model(tmp_path):
    combine = load_script("combine_separate")
    for k in (1, 2, 3):  # model k scores 100*k + layer, so each row says which model it came from
        (tmp_path / f"layers{k}").mkdir()
        _grid(k, f"model_layers{k}", 100 * k).to_csv(tmp_path / f"layers{k}" / "grid.csv", index=False)
    grid = combine.combine(combine.layer_grids(tmp_path))
    assert sorted(zip(grid.layer, grid.dim)) == [(n, d) for n in (1, 2, 3) for d in (16, 32)]
    assert (grid.spearman == 101 * grid.layer).all()
    assert (grid.model == "model_layers" + grid.layer.astype(str)).all()


def test_combine_separate_names_a_missing_depth(tmp_path):
    combine = load_script("combine_separate")
    for k in (1, 3):
        (tmp_path / f"layers{k}").mkdir()
        _grid(k, "m", 0).to_csv(tmp_path / f"layers{k}" / "grid.csv", index=False)
    with pytest.raises(ValueError, match=r"depth\(s\) \[2\]"):
        combine.combine(combine.layer_grids(tmp_path))


def test_combine_separate_takes_the_depths_the_run_trained(tmp_path):
    # method_options.depths: [1, 3] trains no depth-2 model, so no layer-2 rows, and no error for the gap; a grid of
    # a depth the run did not train (a stale folder) is named
    combine = load_script("combine_separate")
    for k in (1, 3):
        (tmp_path / f"layers{k}").mkdir()
        _grid(k, f"model_layers{k}", 100 * k).to_csv(tmp_path / f"layers{k}" / "grid.csv", index=False)
    grid = combine.combine(combine.layer_grids(tmp_path, [1, 3]))
    assert sorted(set(grid.layer)) == [1, 3] and (grid.spearman == 101 * grid.layer).all()
    with pytest.raises(ValueError, match=r"grids of depth\(s\) \[3\], which this run did not train"):
        combine.layer_grids(tmp_path, [1])


def test_data_manifest_stops_on_unreadable_training_data(tmp_path):
    manifest = load_script("data_manifest")
    missing = str(tmp_path / "absent.jsonl")
    result, problems = manifest.manifest("all", "test", [missing])
    assert result["train"][missing]["available"] is False
    assert len(problems) == 1 and missing in problems[0]


def test_tiny_backbone_loads_and_encodes_every_layer(tmp_path):
    from twodmse import backbone
    folder = backbone.make_tiny(tmp_path / "tiny", layers=2, hidden=16)
    enc = backbone.load(str(folder), device="cpu")
    batch = enc.tokenize(["A man is playing a guitar.", "Zebras 123!"])
    out = enc(batch["input_ids"], batch["attention_mask"])
    assert tuple(out.shape) == (2, 2, 16)
    assert (batch["input_ids"] != enc.tokenizer.unk_token_id).all()  # characters cover the text


# ---------------------------------------------------------------- end to end


# _stsb_scores encodes every sentence in one batch, `twodmse eval` in batches of its own: other padded shapes, other
# float32 rounding, which moves a tiny model's near-tied cosines (past 0.001 on an AVX2 machine).
SAME_SCORE = 0.01


def _stsb_scores(folder, layers, max_length, pairs):
    """{(n, d): Spearman x100} of the model in folder really cut to n layers, first d dims, scored with scipy."""
    import torch
    from scipy.stats import spearmanr
    from twodmse import backbone
    enc = backbone.load(str(folder), layers=layers, max_length=max_length)
    with torch.no_grad():
        a, b = (enc.last_layer(**enc.tokenize(s)) for s in (pairs.s1, pairs.s2))
    return {d: 100 * spearmanr(torch.nn.functional.cosine_similarity(a[:, :d], b[:, :d]).numpy(),
                               pairs.scores).statistic for d in (32, 16, 8)}


@pytest.mark.e2e
def test_ci_config_runs_end_to_end_then_figures_come_from_results_alone(tmp_path):
    from twodmse import data
    if not data.available("stsb", split="test") or not data.available("stsb", split="train"):
        needs.missing("STS-B is not readable here (no data mirror and no embedded copy)")
    wd = tmp_path / "wd"
    result = snakemake("--configfile", "configs/ci.yaml", "-d", wd, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]

    cfg = load_config("ci")
    assert cfg["eval"]["dims"] == [32, 16, 8] and cfg["seeds"] == [1]
    stsb = data.load_eval("stsb")
    for method, seed in [("untrained", 0)] + [(m, s) for m in cfg["methods"][1:] for s in cfg["seeds"]]:
        grid = pd.read_csv(wd / f"results/tiny/{method}/seed{seed}/grid.csv").set_index(["layer", "dim"])
        assert sorted(grid.index) == [(n, d) for n in (1, 2, 3) for d in (8, 16, 32)]
        model = wd / (cfg["backbones"]["tiny"] if method == "untrained" else f"runs/tiny/{method}/seed{seed}/model")
        for n in (1, 2, 3):  # each cell: the model cut to n layers, scored independently
            for d, want in _stsb_scores(model, n, cfg["eval"]["max_length"], stsb).items():
                assert grid.spearman[n, d] == pytest.approx(want, abs=SAME_SCORE), (method, n, d)
        if method != "untrained":
            loss = pd.read_csv(wd / f"results/tiny/{method}/seed{seed}/loss.csv")
            assert loss.step.tolist() == [1, 2, 3, 4] and loss.loss.notna().all()  # max_steps: 4
            assert loss.lr[0] == 0.0 and loss.lr.max() == pytest.approx(cfg["train"]["lr"])  # warmup 0.25: 1 step
    speed = pd.read_csv(wd / "results/tiny/speed/speed.csv")
    assert sorted(zip(speed.layers, speed.dim)) == [(n, d) for n in (1, 2, 3) for d in (8, 16, 32)]
    assert speed.set_index(["layers", "dim"]).speedup[3, 32] == 1.0
    # the data check read the same STS-B as the committed default study
    committed = yaml.safe_load((REPO / "results/data_manifest.json").read_text())
    manifest = yaml.safe_load((wd / "results/data_manifest.json").read_text())
    assert manifest["train"]["stsb"]["sha256"] == committed["train"]["stsb"]["sha256"]
    assert manifest["eval"]["stsb"]["sha256"] == committed["eval"]["stsb"]["sha256"]
    trained = sorted(p.parent.name for p in (wd / "results/benchmarks/train/tiny").rglob("*.tsv"))
    assert trained == sorted(cfg["methods"][1:])
    assert (wd / "figures/index.md").is_file()

    # A second call finds everything up to date.
    again = snakemake("-n", "--configfile", "configs/ci.yaml", "-d", wd)
    assert "Nothing to be done" in again.stdout + again.stderr

    # Without models, checkpoints or caches, `snakemake figures` redraws from results/ alone.
    for folder in ("runs", "cache", "figures"):
        shutil.rmtree(wd / folder)
    redraw = snakemake("figures", "--configfile", "configs/ci.yaml", "-d", wd, "--cores", "1")
    assert redraw.returncode == 0, redraw.stderr[-4000:]
    assert (wd / "figures/index.md").is_file() and list((wd / "figures").glob("heatmap_tiny_*.png"))



# ---------------------------------------------------------------- sweep (config `sweep:`)

SWEEP_ARG = "sweep={lr: [1.0e-4, 1.0e-3]}"  # --config passes the values as text; the workflow reads them as YAML


def test_study_config_is_the_default_run_plus_separate_a_sweep_and_seeds():
    cfg = load_config("study")
    assert cfg.pop("sweep") == {"lr": [2.0e-5, 6.0e-5, 2.0e-4, 6.0e-4, 2.0e-3]}
    assert cfg.pop("sweep_seeds") == [42] and cfg.pop("seeds") == [42, 43, 44] and cfg.pop("sweep_settle") is True
    default = load_config("default")
    default.pop("seeds")
    # separate, issue 13's elastic ideas and issue 23's remedies cost too much time for the default run
    assert cfg.pop("methods") == default.pop("methods") + [
        "separate", "relational", "full-heads", "relational-heads", "relational-heads-dimlinear",
        "relational-heads-llr1.25", "relational-heads-llr1.25-ge", "relational-heads-llr1.25-top0.25",
        "relational-heads-llr1.25-uw", "relational-heads-llr1.25-pcgrad", "relational-heads-llr1.25-mlp",
        "st-matryoshka2d"]
    assert cfg == default
    validate(load_config("study"))


def test_default_recipe_uses_the_committed_sweep_picks():
    cfg = load_config("default")
    trained = [m for m in load_config("study")["methods"] if m != "untrained"]
    for method in trained:
        selection = json.loads((REPO / "results/minilm" / method / "sweep/selection.json").read_text())
        assert cfg["method_settings"][method]["lr"] == selection["picked"]["values"]["lr"], method


def test_study_dry_run_sweeps_at_one_seed_and_settles_the_two_best_at_the_others(tmp_path):
    result = snakemake("-n", "--configfile", "configs/study.yaml", "-d", tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    cfg = load_config("study")
    settings = cfg.get("method_settings") or {}
    trained = [m for m in cfg["methods"] if m != "untrained"]
    separate = [m for m in trained if settings.get(m, {}).get("method", m) == "separate"]
    n_values, n_seeds, n_sweep = len(cfg["sweep"]["lr"]), len(cfg["seeds"]), len(cfg["sweep_seeds"])
    n_settle = 2 * (n_seeds - n_sweep)  # the two best candidates at each other seed
    counts = job_counts(result.stdout)
    assert counts["train"] == counts["train_config"] == len(trained) * (n_values * n_sweep + n_settle)  # 12 x 9
    assert counts["shortlist"] == counts["select"] == len(trained)  # one each per method
    assert counts["sweep_pick"] == len(trained) * n_seeds  # every seed's run is a pick's run, none trained afresh
    assert counts["train_log"] == len(trained) * n_seeds  # every seed of every method reaches results
    # dev evaluations of candidates and settle runs, one test evaluation per method and seed, untrained once
    assert counts["evaluate"] == (len(trained) - len(separate)) * (n_values * n_sweep + n_settle + n_seeds) + 1
    assert counts["combine_separate"] == len(separate) * (n_values * n_sweep + n_settle + n_seeds)
    assert counts["mteb"] == (len(trained) - len(separate)) * n_seeds + 1
    assert "runs/minilm/baseline/sweep/lr=2e-5/seed42/train_config.yaml" in result.stdout
    assert "runs/minilm/baseline/sweep/lr=2e-5/seed43" not in result.stdout  # no sweep at the other seeds
    # a settle run is configured from its method's shortlist, and the method's seed-43 run is a pick's
    job = next(j for j in result.stdout.split("\n\n")
               if "output: runs/minilm/baseline/settle/rank2/seed43/train_config.yaml" in j)
    assert "input: results/minilm/baseline/sweep/shortlist.json" in job
    job = next(j for j in result.stdout.split("\n\n") if "output: runs/minilm/baseline/seed43/train_info.json" in j)
    assert "rule sweep_pick:" in job and "runs/minilm/baseline/settle/rank1/seed43/train_info.json" in job


def test_mpnet_study_trains_fewer_seeds_where_it_says_and_separate_at_the_published_depths(tmp_path):
    result = snakemake("-n", "--configfile", "configs/study-mpnet.yaml", "-d", tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    cfg = load_config("study-mpnet")
    trained = [m for m in cfg["methods"] if m != "untrained"]
    one_seed = [m for m in trained if cfg["method_settings"].get(m, {}).get("seeds") == [42]]
    assert sorted(one_seed) == ["mrl", "separate", "starbucks"]
    n_values, n_settled = len(cfg["sweep"]["lr"]), len(trained) - len(one_seed)
    counts = job_counts(result.stdout)
    assert counts["train"] == len(trained) * n_values + n_settled * 2 * 2  # two best at seeds 43 and 44
    assert counts["shortlist"] == n_settled and counts["select"] == len(trained)
    assert counts["sweep_pick"] == n_settled * 3 + len(one_seed)
    for m in one_seed:
        assert f"runs/mpnet/{m}/seed43" not in result.stdout and f"results/mpnet/{m}/seed42/grid.csv" in result.stdout
    # separate's full depth is the baseline candidate's model, although separate trains its depths only
    job = next(j for j in result.stdout.split("\n\n")
               if "output: runs/mpnet/separate/sweep/lr=5e-5/seed42/train_info.json" in j)
    assert "runs/mpnet/baseline/sweep/lr=5e-5/seed42/train_info.json" in job
    assert cfg["method_settings"]["separate"]["method_options"]["depths"] == [2, 4, 6, 8, 10, 12]


def stage_for_resume(wd):
    """workflow/README.md's staging of committed results on a new machine: the run configs marked checked (else
    checking them again would make every run look new), and one time for every staged file (a copy's order must not
    make a file look newer)."""
    (wd / "runs").mkdir(exist_ok=True)
    (wd / "runs/train_configs.checked").touch()
    now = os.stat(wd).st_mtime
    for path in (wd / "results").rglob("*"):
        os.utime(path, (now, now))


def test_a_study_resumed_without_its_runs_trains_the_picks_only_with_sweep_picks_retrain(tmp_path):
    """A new machine has results/ (committed) and no runs/. For the MPNet baseline's results without its test seeds,
    link would train all seven candidates and settle runs again to link the three picks (and score them on dev
    again); retrain trains the three picks afresh and scores them on test, nothing else."""
    wd = tmp_path / "wd"
    shutil.copytree(REPO / "results/mpnet/baseline", wd / "results/mpnet/baseline")
    shutil.copy(REPO / "results/data_manifest.json", wd / "results")
    for seed in (42, 43, 44):
        shutil.rmtree(wd / f"results/mpnet/baseline/seed{seed}")
    stage_for_resume(wd)
    args = ["-n", "--configfile", "configs/study-mpnet.yaml", "-d", wd, "--omit-from", "speed", "--config",
            "methods=[baseline]"]
    plans = {mode: snakemake(*args, f"sweep_picks={mode}") for mode in ("link", "retrain")}
    assert all(plan.returncode == 0 for plan in plans.values()), plans["retrain"].stderr[-2000:]
    link, retrain = (job_counts(plans[mode].stdout) for mode in ("link", "retrain"))
    assert link["train"] == 3 + 4 and link["evaluate"] == 3 + 3 + 4  # test seeds; candidates and settle runs on dev
    assert retrain["train"] == retrain["evaluate"] == 3
    assert {"sweep_pick", "select", "shortlist"}.isdisjoint(retrain)
    for seed in (42, 43, 44):
        config = f"output: runs/mpnet/baseline/seed{seed}/train_config.yaml"
        job = next(j for j in plans["retrain"].stdout.split("\n\n") if config in j)
        assert "input: results/mpnet/baseline/sweep/selection.json" in job  # configured with the pick


def test_a_sweep_resumed_with_some_candidates_committed_trains_the_missing_ones_then_the_picks_only(tmp_path):
    """workflow/README.md's recipe for a sweep that lost its machine midway, on MPNet separate's committed
    candidates: the missing candidate's grid as the target trains that candidate alone; with every grid in place,
    retrain selects from the committed grids and trains the pick, no candidate again."""
    wd = tmp_path / "wd"
    sweep = wd / "results/mpnet/separate/sweep"
    # the sweep as it stood with two candidates scored (once the study lands, its pick is left out too)
    skip = shutil.ignore_patterns("lr=1e-4", "selection.json")
    shutil.copytree(REPO / "results/mpnet/separate/sweep", sweep, ignore=skip)
    shutil.copy(REPO / "results/data_manifest.json", wd / "results")

    def plan(*extra):
        stage_for_resume(wd)
        result = snakemake("-n", "--configfile", "configs/study-mpnet.yaml", "-d", wd, "--omit-from", "speed",
                           "--config", "methods=[separate]", *extra)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    missing = "results/mpnet/separate/sweep/lr=1e-4/seed42/grid.csv"
    assert job_counts(plan())["train"] == 3  # a plain run: all three candidates (the pick is linked from them)
    first = plan("--", missing)
    assert job_counts(first)["train"] == 1 and "runs/mpnet/separate/sweep/lr=1e-4/seed42/train_info" in first
    shutil.copytree(sweep / "lr=5e-5", sweep / "lr=1e-4")  # stands in for the grid the first step writes
    then = plan("sweep_picks=retrain")
    assert job_counts(then)["train"] == 1 and "select" in job_counts(then)
    assert "runs/mpnet/separate/sweep/" not in then


def test_seeds_and_methods_from_the_command_line_plan_like_a_config_file(tmp_path):
    # the command in configs/default.yaml's comment for the bf16 check (--config passes each seed as text)
    result = snakemake("-n", "--configfile", "configs/default.yaml", "--config", "methods=[baseline-bf16,2dmse-bf16]",
                       "seeds=[42,43,44]", "-d", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert job_counts(result.stdout)["train"] == 6 and "runs/minilm/2dmse-bf16/seed44/" in result.stdout


def test_the_gpu_mpnet_study_is_the_cpu_study_at_full_size():
    cpu, gpu = load_config("study-mpnet"), load_config("study-mpnet-gpu")
    assert set(cpu["methods"]) <= set(gpu["methods"]) == set(load_config("study")["methods"])
    assert set(cpu["seeds"]) < set(gpu["seeds"]) and set(cpu["sweep"]["lr"]) < set(gpu["sweep"]["lr"])
    assert not any("seeds" in s or "depths" in s.get("method_options", {}) for s in gpu["method_settings"].values())
    assert gpu["method_settings"]["relational-heads-llr1.25-uw"] == \
        cpu["method_settings"]["relational-heads-llr1.25-uw"]
    same = ("backbones", "train", "eval", "speed", "mteb", "sweep_seeds", "sweep_settle")
    assert {k: gpu[k] for k in same} == {k: cpu[k] for k in same}


@pytest.mark.parametrize("seeds, message", [
    ("[43]", r"method_settings.mrl.seeds': lacks sweep seed\(s\) \[42\]"),
    ("[42, 7]", r"method_settings.mrl.seeds': \[7\] not in `seeds`"),
])
def test_a_methods_seeds_outside_the_study_or_without_the_sweep_seed_stop(seeds, message, tmp_path):
    cfg = {**load_config("study-mpnet"), "methods": ["mrl"]}
    cfg["method_settings"]["mrl"]["seeds"] = yaml.safe_load(seeds)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    result = snakemake("-n", "--configfile", tmp_path / "config.yaml", "-d", tmp_path / "wd")
    assert result.returncode != 0 and re.search(message, result.stderr + result.stdout), result.stderr[-2000:]


def test_without_settle_the_other_seeds_train_the_pick_afresh(tmp_path):
    cfg = {**load_config("study"), "sweep_settle": False, "methods": ["baseline"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    result = snakemake("-n", "--configfile", tmp_path / "config.yaml", "-d", tmp_path / "wd")
    assert result.returncode == 0, result.stderr + result.stdout
    counts = job_counts(result.stdout)
    assert counts["train"] == 5 + 2 and counts["sweep_pick"] == 1 and "shortlist" not in counts
    job = next(j for j in result.stdout.split("\n\n") if "output: runs/minilm/baseline/seed43/train_config.yaml" in j)
    assert "input: results/minilm/baseline/sweep/selection.json" in job


@pytest.mark.parametrize("arg, message", [
    ("sweep={lrr: [1.0e-4]}", "config key 'sweep': 'lrr' is not a `train` key (did you mean 'lr'?)"),
    ("sweep={lr: []}", "config key 'sweep.lr': give a non-empty list of values to try"),
    ("sweep={}", "config key 'sweep': name at least one `train` key with a list of values"),
    ("sweep={lr: [2e-5]}", "config key 'sweep.lr': '2e-5' is not of type 'number' (write numbers as 2.0e-5"),
    ("sweep={batch_size: [0]}", "config key 'sweep.batch_size': 0 is less than the minimum of 1"),
])
def test_bad_sweep_stops_with_one_message_naming_the_key(arg, message, tmp_path):
    out = _short_config_error(snakemake("-n", "--configfile", "configs/ci.yaml", "-d", tmp_path, "--config", arg))
    assert message in out, out


def test_sweep_seeds_outside_the_seeds_stop_with_one_message(tmp_path):
    config = {**load_config("ci"), "sweep": {"lr": [1.0e-4]}, "sweep_seeds": [7]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = _short_config_error(snakemake("-n", "--configfile", tmp_path / "config.yaml", "-d", tmp_path / "wd"))
    assert "config key 'sweep_seeds': [7] not in `seeds` [1]" in out, out


def test_sweep_without_a_readable_dev_split_stops_before_planning(tmp_path):
    # twodmse.data.available() patched (sitecustomize) to find no dev split, as on a machine without one
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import twodmse.data as d\n"
        "_available = d.available\n"
        "d.available = lambda name, *a, split=None, **k: split != 'dev' and _available(name, *a, split=split, **k)\n")
    result = snakemake("-n", "--configfile", "configs/ci.yaml", "-d", tmp_path / "wd", "--config", SWEEP_ARG,
                       env={"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])})
    out = _short_config_error(result)
    assert "config key 'sweep'" in out and "STS-B dev" in out and "remove `sweep`" in out, out


def test_select_picks_the_highest_dev_grid_mean_and_the_first_of_a_tie(tmp_path):
    select = load_script("select_sweep")

    def dev_grid(name, scores):
        path = tmp_path / f"{name}.csv"
        pd.DataFrame([{"dataset": "stsb", "split": "dev", "layer": n, "dim": 8, "spearman": v}
                      for n, v in enumerate(scores, 1)]).to_csv(path, index=False)
        return path

    candidates = {f"m/sweep/lr={v}": {"lr": v} for v in (1, 2, 3)}
    grids = {"m/sweep/lr=1": {1: dev_grid("a1", [10, 20]), 2: dev_grid("a2", [30, 40])},  # mean 25
             "m/sweep/lr=2": {1: dev_grid("b1", [30, 30]), 2: dev_grid("b2", [20, 20])},  # 25: a tie, later
             "m/sweep/lr=3": {1: dev_grid("c1", [0, 0]), 2: dev_grid("c2", [0, 100])}}  # 25 as well
    records, best, per_depth = select.select(candidates, grids)
    assert [r["dev_grid_mean"] for r in records] == [r["score"] for r in records] == [25, 25, 25]
    assert best["candidate"] == "lr=1" and best["margin"] == 0 and per_depth is None
    grids["m/sweep/lr=3"][2] = dev_grid("c2", [0, 101])
    assert select.select(candidates, grids)[1]["values"] == {"lr": 3}
    # on the top cell (layer 2) alone: lr=3's seeds score 0 and 101 there (50.5), lr=1's 20 and 40 (30)
    records, best, _ = select.select(candidates, grids, "top")
    assert [r["score"] for r in records] == [30, 25, 50.5] and best["candidate"] == "lr=3"
    assert best["margin"] == pytest.approx(20.5)
    # each depth on its own: layer 1 picks lr=1 (20 vs 25 vs 0: lr=2), layer 2 lr=3; the method's run is layer 2's
    _, best, per_depth = select.select(candidates, grids, "each-depth")
    assert {k: p["candidate"] for k, p in per_depth.items()} == {"1": "lr=2", "2": "lr=3"}
    assert per_depth["1"]["score"] == 25 and per_depth["1"]["margin"] == 5 and best == per_depth["2"]


def test_separate_picked_depth_by_depth_is_assembled_and_retrained_from_its_picks(tmp_path):
    selection = {"picked": {"run": "separate/sweep/lr=2e-4", "candidate": "lr=2e-4", "values": {"lr": 2e-4}},
                 "picked_per_depth": {"1": {"run": "separate/sweep/lr=6e-4", "candidate": "lr=6e-4",
                                            "values": {"lr": 6e-4}},
                                      "2": {"run": "separate/sweep/lr=2e-4", "candidate": "lr=2e-4",
                                            "values": {"lr": 2e-4}}},
                 "rule": "r"}
    # the other seeds train each depth with its own pick: depth 1's lr in method_options.per_depth
    write = load_script("write_train_config")
    assert write.picked_settings(selection, {"method_options": {"dims": [8]}}) == {
        "lr": 2e-4, "method_options": {"dims": [8], "per_depth": {1: {"lr": 6e-4}}}}
    # the sweep seed's run links each depth's model, curve and record from that depth's pick
    runs = tmp_path / "runs"
    for lr in ("6e-4", "2e-4"):
        run = runs / f"separate/sweep/lr={lr}/seed42"
        for k in (1, 2):
            (run / f"model_layers{k}").mkdir(parents=True)
            (run / f"loss_layers{k}.csv").write_text(lr)
            (run / f"train_info_layers{k}.json").write_text(json.dumps({"lr": lr}))
        (run / "train_info.json").write_text(json.dumps({"config": {"lr": lr}}))
    (tmp_path / "selection.json").write_text(json.dumps(selection))
    out = runs / "separate/seed42"
    load_script("sweep_pick").pick(tmp_path / "selection.json", runs, 42, out)
    assert (out / "model_layers1").resolve() == (runs / "separate/sweep/lr=6e-4/seed42/model_layers1").resolve()
    assert (out / "model_layers2").resolve() == (runs / "separate/sweep/lr=2e-4/seed42/model_layers2").resolve()
    assert [(out / f"loss_layers{k}.csv").read_text() for k in (1, 2)] == ["6e-4", "2e-4"]
    info = json.loads((out / "train_info.json").read_text())
    assert info["sweep"]["picked_per_depth"]["1"]["candidate"] == "lr=6e-4"


def test_every_method_declares_a_selection_target_the_schema_knows():
    from twodmse import cells, methods
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    enum = schema["properties"]["method_settings"]["additionalProperties"]["properties"]["select_on"]["enum"]
    assert sorted(enum) == sorted(cells.CELL_SETS)
    assert {m: methods.select_on(m) for m in methods.names()} == {
        "baseline": "top", "full": "all", "separate": "each-depth", "mrl": "last", "2dmse": "all",
        "starbucks": "starbucks-diagonal", "relational": "all", "st-matryoshka2d": "all"}


def test_each_depth_on_a_single_model_method_stops_with_one_message(tmp_path):
    config = {**load_config("ci"), "method_settings": {"baseline": {"select_on": "each-depth"}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = _short_config_error(snakemake("-n", "--configfile", tmp_path / "config.yaml", "-d", tmp_path / "wd"))
    assert "config key 'method_settings.baseline.select_on': each-depth picks each depth's model" in out, out


@pytest.mark.e2e
def test_ci_sweep_runs_end_to_end_and_only_the_picked_run_is_tested(tmp_path):
    from twodmse import data, loaders
    if not all(data.available("stsb", split=s) for s in ("train", "dev", "test")):
        needs.missing("STS-B train, dev and test are not readable here (no data mirror and no embedded copy)")
    wd = tmp_path / "wd"
    # baseline only, to keep CI short: separate's candidates and twins are planned by the dry-run test above.
    # Seeds 1 and 2, the sweep at seed 1: seed 2 trains the pick afresh.
    config = {**load_config("ci"), "methods": ["baseline"], "seeds": [1, 2], "sweep_seeds": [1],
              "sweep": {"lr": [1.0e-4, 1.0e-3]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    args = ["--configfile", tmp_path / "config.yaml", "-d", wd]
    result = snakemake(*args, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    results = wd / "results/tiny"
    for method in ("baseline",):
        selection = json.loads((results / method / "sweep/selection.json").read_text())
        means, tops = {}, {}
        for cand in ("lr=1e-4", "lr=1e-3"):  # dev grid mean and (L, H) score, recomputed from the dev grid
            grid = pd.read_csv(results / method / "sweep" / cand / "seed1/grid.csv")
            assert set(grid.split) == {"dev"} and set(grid.dataset) == {"stsb"} and len(grid) == 9  # 3 x 3 cells
            means[cand] = grid.spearman.mean()
            tops[cand] = grid.set_index(["layer", "dim"]).spearman[grid.layer.max(), grid.dim.max()]
        assert {c["candidate"]: c["dev_grid_mean"] for c in selection["candidates"]} == pytest.approx(means)
        # baseline is picked on the one cell it trains
        assert selection["target"] == "top" and selection["target_cells"] == "(L, H)"
        assert {c["candidate"]: c["score"] for c in selection["candidates"]} == pytest.approx(tops)
        picked = max(tops, key=tops.get)
        assert selection["picked"]["candidate"] == picked
        assert selection["picked"]["values"] == {"lr": {"lr=1e-4": 1e-4, "lr=1e-3": 1e-3}[picked]}
        # the method's run is the picked candidate's: its model(s), its provenance, scored on test
        run = wd / "runs/tiny" / method / "seed1"
        model = "model" if method == "baseline" else "model_layers3"
        assert (run / model).resolve() == (wd / "runs/tiny" / method / "sweep" / picked / "seed1" / model).resolve()
        info = json.loads((results / method / "seed1/train_info.json").read_text())
        assert info["sweep"]["picked"]["candidate"] == picked
        assert info["config"]["lr"] == selection["picked"]["values"]["lr"]
        grid = pd.read_csv(results / method / "seed1/grid.csv")
        assert set(grid.split) == {"test"} and (results / method / "seed1/bootstrap.npz").is_file()
        # seed 2: trained afresh (no sweep candidates at seed 2) with the picked values, scored on test
        assert not (wd / "runs/tiny" / method / "sweep" / picked / "seed2").exists()
        assert not (wd / "runs/tiny" / method / "seed2/model").is_symlink()
        info2 = json.loads((results / method / "seed2/train_info.json").read_text())
        assert info2["config"]["lr"] == selection["picked"]["values"]["lr"] and info2["config"]["seed"] == 2
        assert set(pd.read_csv(results / method / "seed2/grid.csv").split) == {"test"}
    # the picked baseline's test grid is its model's, cell by cell
    grid = pd.read_csv(results / "baseline/seed1/grid.csv").set_index(["layer", "dim"])
    for d, want in _stsb_scores(wd / "runs/tiny/baseline/seed1/model", 3, 64, data.load_eval("stsb")).items():
        assert grid.spearman[3, d] == pytest.approx(want, abs=SAME_SCORE)
    # the report sees the picked runs only, and draws the sweep
    found = sorted(str(p.relative_to(wd / "results")) for p in (wd / "results").glob(loaders.GRID_GLOB))
    assert found == ["tiny/baseline/seed1/grid.csv", "tiny/baseline/seed2/grid.csv"]
    assert (wd / "figures/sweep_tiny.png").is_file()
    table = (wd / "figures/sweep_tiny.md").read_text()
    assert "| method | target | picked | pick score | margin | settled | lr=1e-4 | lr=1e-3 |" in table
    # a second call finds everything up to date (the links of sweep_pick do not look new)
    again = snakemake("-n", *args)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.e2e
def test_settled_sweep_of_separate_picks_each_depth_and_links_the_picks_runs(tmp_path):
    from twodmse import data
    if not all(data.available("stsb", split=s) for s in ("train", "dev", "test")):
        needs.missing("STS-B train, dev and test are not readable here (no data mirror and no embedded copy)")
    wd = tmp_path / "wd"
    # separate on the 3-layer tiny model, three lrs at seed 1, the two best of each depth settled at seed 2; up to
    # the method's runs (their test scoring is the usual evaluation, tested above)
    config = {**load_config("ci"), "methods": ["separate"], "seeds": [1, 2], "sweep_seeds": [1],
              "sweep": {"lr": [1.0e-5, 1.0e-4, 1.0e-3]}, "sweep_settle": True}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    targets = [f"runs/tiny/separate/seed{s}/train_info.json" for s in (1, 2)]
    args = ["--configfile", tmp_path / "config.yaml", "-d", wd, *targets]
    result = snakemake(*args, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    results, runs = wd / "results/tiny/separate", wd / "runs/tiny/separate"
    short = json.loads((results / "sweep/shortlist.json").read_text())["ranks"]
    selection = json.loads((results / "sweep/selection.json").read_text())
    assert selection["target"] == "each-depth" and selection["settled"] is True
    for depth in ("1", "2", "3"):
        # each depth's two best at seed 1, on its own (k, H) cell, recomputed from the candidates' dev grids
        dev = {c: pd.read_csv(results / "sweep" / c / "seed1/grid.csv").set_index(["layer", "dim"]).spearman[
            int(depth), 32] for c in ("lr=1e-5", "lr=1e-4", "lr=1e-3")}
        best_two = sorted(dev, key=dev.get, reverse=True)[:2]
        assert [short[r]["picked_per_depth"][depth]["candidate"] for r in ("1", "2")] == best_two
        # the settle runs trained each depth at its rank's lr, and the pick is the better mean over both seeds
        pick = selection["picked_per_depth"][depth]
        ranks = {o["rank"]: o for o in pick["ranks"]}
        for r, o in ranks.items():
            settled = pd.read_csv(results / f"settle/rank{r}/seed2/grid.csv").set_index(["layer", "dim"])
            assert o["score_per_seed"] == pytest.approx({"1": dev[o["candidate"]],
                                                         "2": settled.spearman[int(depth), 32]})
            info = json.loads((runs / f"settle/rank{r}/seed2/train_info_layers{depth}.json").read_text())
            assert info["config"]["lr"] == o["values"]["lr"]
        assert pick["rank"] == max(ranks, key=lambda r: (ranks[r]["score"], -r))
        # the method's runs are the pick's: its candidate at seed 1, its settle run at seed 2
        for seed, source in ((1, runs / "sweep" / pick["candidate"] / "seed1"),
                             (2, runs / f"settle/rank{pick['rank']}/seed2")):
            link = runs / f"seed{seed}/model_layers{depth}"
            assert link.resolve() == (source / f"model_layers{depth}").resolve()
    again = snakemake("-n", *args)
    assert "Nothing to be done" in again.stdout + again.stderr



@pytest.mark.e2e
def test_the_default_run_on_a_fresh_clone_leaves_git_status_clean(tmp_path):
    """`make run`'s Snakemake call on a fresh clone of HEAD (the committed results in place) rewrites nothing
    tracked and leaves nothing untracked: only the data check runs, and it writes the same facts."""
    mirror = needs.data_mirror()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    env = {"TWODMSE_DATA": str(mirror)}
    plan = snakemake("-n", cwd=clone, env=env)
    assert plan.returncode == 0, plan.stderr[-3000:]
    counts = job_counts(plan.stdout) if "Job stats:" in plan.stdout else {}
    assert set(counts) <= {"data_manifest", "total"}, f"a fresh clone would recompute: {counts}"  # no retraining
    run = snakemake("--cores", "1", cwd=clone, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", status.stdout


def test_a_bad_method_option_stops_the_workflow_with_its_message_and_no_hang(tmp_path):
    # the up-front check of every run's config fails inside a `run:` job; Snakemake must exit with the message
    config = {**load_config("ci"), "method_settings": {"2dmse": {"method_options": {"foo": 1}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        result = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", str(tmp_path / "config.yaml"),
                                 "-d", str(tmp_path / "wd"), "--cores", "1", "runs/train_configs.checked"],
                                cwd=REPO, capture_output=True, text=True, timeout=120,
                                env=dict(os.environ, HF_HUB_OFFLINE="1"))
    except subprocess.TimeoutExpired:
        pytest.fail("snakemake did not exit within 120 s after the config check failed")
    assert result.returncode != 0
    assert "method 2dmse has no option 'foo'" in result.stdout + result.stderr


def test_one_more_backbone_line_plans_every_run_of_it(tmp_path):
    """README, "Compare your own backbone": the one line a user adds under `backbones:` makes the workflow train,
    score, time and report that backbone too (figures per backbone: tests/test_report.py)."""
    config = {**load_config("ci"), "backbones": {**load_config("ci")["backbones"],
                                                 "mine": "runs/backbones/tiny-bert-2x16"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", tmp_path / "config.yaml", "-d", tmp_path / "wd")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for backbone in ("tiny", "mine"):
        for planned in (f"runs/{backbone}/baseline/seed1/train_info.json", f"results/{backbone}/2dmse/seed1/grid.csv",
                        f"results/{backbone}/untrained/seed0/grid.csv", f"results/{backbone}/speed/speed.csv"):
            assert planned in result.stdout, planned
    assert "runs/backbones/tiny-bert-2x16" in result.stdout  # its random weights are built too
