"""Adding a method is one file: a toy method in a temporary module, registered through $TWODMSE_METHODS,
trains with `twodmse train` and is planned by the workflow without touching any file of the repository."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twodmse import methods

REPO = Path(__file__).resolve().parent.parent

# The README's example method, "Add a method", as it is written there.
TOY = (REPO / "README.md").read_text().split("## Add a method", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def toy_env(tmp_path):
    (tmp_path / "toy_method.py").write_text(TOY)
    return dict(os.environ, HF_HUB_OFFLINE="1", TWODMSE_METHODS="toy=toy_method",
                PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
                PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def test_a_toy_method_trains_through_the_cli(toy_env, tiny_bert, tmp_path):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(json.dumps({"method": "toy", "model": str(tiny_bert), "max_steps": 2, "batch_size": 4,
                               "limit": 16, "method_options": {"dims": [32, 16, 8]}}))
    run = subprocess.run([sys.executable, "-m", "twodmse.cli", "train", "--config", cfg, "--out", tmp_path / "out"],
                         env=toy_env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = (tmp_path / "out" / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,lr,grad_norm,pairs_per_s,cells") and len(rows) == 3
    assert all(r.split(",")[6] == "2.0" for r in rows[1:])  # its two cells, every step
    assert (tmp_path / "out" / "model" / "model.safetensors").exists()
    help_text = subprocess.run([sys.executable, "-m", "twodmse.cli", "train", "--help"], env=toy_env,
                               capture_output=True, text=True).stdout
    assert "toy" in help_text and "the last layer at its two narrowest training widths" in help_text
    assert "weight: weight of the two cells [a number > 0; default 1.0]" in help_text  # from its declaration
    cfg.write_text(json.dumps({"method": "toy", "model": str(tiny_bert), "method_options": {"weight": 0}}))
    run = subprocess.run([sys.executable, "-m", "twodmse.cli", "train", "--config", cfg, "--out", tmp_path / "bad"],
                         env=toy_env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "method toy: option weight must be a number > 0; got 0" in run.stderr
    assert not (tmp_path / "bad").exists()


def test_a_toy_method_is_planned_by_the_workflow(toy_env, tmp_path):
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "configs/ci.yaml",
                          "--config", "methods=[untrained,toy]", "-d", tmp_path / "wd"],
                         cwd=REPO, env=toy_env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "runs/tiny/toy/seed1" in run.stdout
    unknown = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "configs/ci.yaml",
                              "--config", "methods=[untrained,toy]", "-d", tmp_path / "wd2"],
                             cwd=REPO, env={**toy_env, "TWODMSE_METHODS": ""}, capture_output=True, text=True,
                             timeout=600)
    assert unknown.returncode != 0 and "toy" in unknown.stdout + unknown.stderr


def test_the_registry_lists_each_method_once_and_imports_it_lazily():
    names = methods.names()
    assert names[:3] == ("baseline", "full", "separate") and len(set(names)) == len(names) == 8
    code = "import sys; from twodmse import methods; methods.names(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    for name in names:
        module = methods.get(name)
        assert module.__doc__.startswith(f"{name}: ") and (hasattr(module, "Method") or hasattr(module, "train"))


def test_a_malformed_registration_is_named(monkeypatch):
    monkeypatch.setenv("TWODMSE_METHODS", "toy")
    with pytest.raises(methods.UserError, match=r"\$TWODMSE_METHODS: 'toy' is not NAME=MODULE"):
        methods.names()
    monkeypatch.setenv("TWODMSE_METHODS", "toy=no_such_module_here")
    with pytest.raises(methods.UserError, match="cannot import its module no_such_module_here"):
        methods.get("toy")


def test_the_readme_method_table_follows_the_registry():
    text = (REPO / "README.md").read_text()
    table = text.split("| method | cells supervised each step |")[1].split("\n\n")[0]
    assert [row.split("`")[1] for row in table.splitlines()[2:]] == list(methods.names())
