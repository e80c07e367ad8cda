"""The paper configs (configs/paper.yaml = Starbucks Table A1's recipe, configs/paper-ielab-v1.yaml = ielab
2DMSE-Reproduce V1): they plan in full, every run they define trains and scores on a tiny backbone, and every value
in them says where it comes from.

Cost: about a minute on 2 CPU cores (the trainings run two at a time, in subprocesses as `twodmse train` runs).
"""
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml

import needs
from test_workflow import job_counts, snakemake

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIGS = ["paper", "paper-ielab-v1"]
TINY_LAYERS, TINY_HIDDEN = 3, 64   # 64 wide, so that the paper widths 64 and 32 (and 16, 8) fit


def load(name):
    return yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())


def run_config(cfg, method, model):
    """A run's `twodmse train` config as the workflow builds it (workflow/rules/common.smk run_settings): the shared
    train keys, then the method's overrides (shallow), then model, method and seed."""
    settings = dict((cfg.get("method_settings") or {}).get(method, {}))
    base = settings.pop("method", method)
    return {**cfg["train"], **settings, "model": str(model), "method": base, "seed": cfg["seeds"][0]}


# ---------------------------------------------------------------- (a) planning and the config check

@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_plans_every_run_and_passes_the_train_config_check(name, tmp_path):
    cfg = load(name)
    result = snakemake("-n", "--configfile", f"configs/{name}.yaml", "-d", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    counts = job_counts(result.stdout)
    trained = [m for m in cfg["methods"] if m != "untrained"]
    n_runs = len(cfg["backbones"]) * len(cfg["seeds"])
    assert counts["train"] == len(trained) * n_runs
    assert counts.get("combine_separate", 0) == ("separate" in trained) * n_runs
    assert counts["report"] == 1

    result = snakemake("--until", "check_train_configs", "--configfile", f"configs/{name}.yaml",
                       "-d", tmp_path, "--cores", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    checked = (tmp_path / "runs/train_configs.checked").read_text().split()
    assert len(checked) == len(trained) * n_runs


# ---------------------------------------------------------------- (b) every run, end to end, tiny

def _fit_widths(run, hidden):
    """The paper's widths (768, 512, ...) kept where they fit the tiny backbone; every other option as written."""
    options = dict(run.get("method_options") or {})
    for key in ("dims", "matryoshka_dims"):
        if options.get(key):
            options[key] = [d for d in options[key] if d <= hidden]
    return {**run, "method_options": options}


def _train(args):
    cfg_path, out, mirror = args
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TWODMSE_DATA": str(mirror)}
    return subprocess.run([sys.executable, "-m", "twodmse.cli", "train", "--config", str(cfg_path), "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


# The methods trained here: the Table A1 / README rows with options of their own, and AnglE's 2dmse. `mrl` and
# `full` are left out to keep the file near a minute: their only option, dims, is checked by the config check of
# (a), which checks every grid method's options, and they train through the same loop as baseline and starbucks.
E2E_METHODS = ("baseline", "separate", "st-matryoshka2d", "starbucks", "2dmse")


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_every_run_of_the_paper_config_trains_and_scores_on_a_tiny_backbone(name, tmp_path):
    # The config's train keys and method settings as they are (so an option twodmse or Matryoshka2dLoss rejects
    # fails here), with a tiny backbone, 32 of the mirror's SNLI triplets and 2 steps of 8 on the CPU.
    mirror = needs.data_mirror()
    needs.module("sentence_transformers", "pip install 'twodmse[st]'")
    from twodmse.backbone import make_tiny
    cfg = load(name)
    model = make_tiny(tmp_path / "tiny", layers=TINY_LAYERS, hidden=TINY_HIDDEN)
    small = {"train_source": "mirror", "limit": 32, "max_steps": 2, "batch_size": 8, "grad_accum": 1,
             "device": "cpu", "bf16": False}
    methods = [m for m in cfg["methods"] if m in E2E_METHODS]
    assert {"baseline", "st-matryoshka2d"} <= set(methods)

    def job(method):
        run = {**_fit_widths(run_config(cfg, method, model), TINY_HIDDEN), **small}
        if method == "separate":  # as the workflow does: its full depth is the baseline run's model
            run["method_options"]["top_model"] = str(tmp_path / "runs" / "baseline" / "model")
        path = tmp_path / f"{method}.yaml"
        path.write_text(yaml.safe_dump(run))
        return path, tmp_path / "runs" / method, mirror

    jobs = [job(m) for m in methods if m != "separate"]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(_train, jobs))
    if "separate" in methods:
        jobs.append(job("separate"))
        results.append(_train(jobs[-1]))
    for (path, out, _), result in zip(jobs, results):
        assert result.returncode == 0, f"{path.name}:\n{result.stderr[-3000:]}"
        assert (out / "train_info.json").exists(), path.name

    if name != "paper":
        return
    # Score one checkpoint (sentence-transformers' own save) the way the config scores: stsb, its widths that fit.
    dims = [d for d in cfg["eval"]["dims"] if d <= TINY_HIDDEN]
    first = tmp_path / "runs" / "st-matryoshka2d"
    scored = subprocess.run(
        [sys.executable, "-m", "twodmse.cli", "eval", "--model", str(first / "model"), "--datasets", "stsb",
         "--dims", ",".join(map(str, dims)), "--out", str(tmp_path / "eval"), "--source", "mirror",
         "--max-length", "64", "--cache", str(tmp_path / "cache"), "--device", "cpu"],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "TWODMSE_DATA": str(mirror)},
        capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr[-3000:]
    grid = pd.read_csv(tmp_path / "eval" / "grid.csv")
    assert set(grid["dim"]) == set(dims) and set(grid["layer"]) == set(range(1, TINY_LAYERS + 1))


# ---------------------------------------------------------------- (c) every value says where it comes from

CITED = re.compile(r"#.*(\S+@[0-9a-f]{7,40}\b|\bours:)")
VALUE_LINE = re.compile(r"^\s*[\w.-]+:\s*(?!#)\S")   # `key: value` (a mapping that opens a block has no value)


def uncited_lines(text):
    return [f"{i}: {line}" for i, line in enumerate(text.splitlines(), 1)
            if VALUE_LINE.match(line) and not line.lstrip().startswith("#") and not CITED.search(line)]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_every_value_of_the_paper_config_cites_a_file_at_a_commit_or_says_ours(name):
    assert uncited_lines((REPO / "configs" / f"{name}.yaml").read_text()) == []


def test_the_citation_check_catches_an_uncited_value():
    assert uncited_lines("train:\n  lr: 5.0e-5   # the usual\n  epochs: 1  # ours: short\n") == ["2:   lr: 5.0e-5   # the usual"]
    assert uncited_lines("  batch_size: 128  # train.py@2a3b24f\n  x: {a: 1}\n") == ["2:   x: {a: 1}"]
