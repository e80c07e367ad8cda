"""A non-editable install works outside the repository: the task lists and published numbers are package data.

The package is built from a copy of the repository's pyproject.toml, README.md and twodmse/ (pip builds in the
source tree, which must not be the shared checkout) and installed with `pip install --no-deps
--no-build-isolation --no-index` into a fresh venv in tmp_path. Its dependencies (torch, pandas, ...) come from
this venv's site-packages through a .pth path entry, which puts them on sys.path without running their .pth
files, so this checkout's editable install of twodmse is not importable there: every `twodmse` import in the
fresh venv is the installed copy (the test checks __file__). Every command runs from a folder outside the
repository. Offline, about 20 s.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
STS_TEST = ["stsb", "sickr", "sts12", "sts13", "sts14", "sts15", "sts16"]


def run(cmd, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def site_packages(venv):
    return Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, outside): a fresh venv holding a wheel-style install of twodmse, and a folder outside the repo."""
    root = tmp_path_factory.mktemp("install")
    assert REPO not in root.parents, "tmp_path must lie outside the repository"
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "twodmse", src / "twodmse", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site_packages(venv) / "_project_deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", src], cwd=root)
    outside = root / "elsewhere"
    outside.mkdir()
    return venv, outside


def test_package_data_is_installed(installed):
    venv, _ = installed
    pkg = site_packages(venv) / "twodmse"
    assert (pkg / "mteb_tasks.yaml").read_bytes() == (REPO / "twodmse" / "mteb_tasks.yaml").read_bytes()
    shipped = sorted(p.name for p in (REPO / "twodmse" / "published").glob("*.csv"))
    assert len(shipped) >= 6 and sorted(p.name for p in (pkg / "published").glob("*.csv")) == shipped
    assert (pkg / "published" / "README.md").is_file()
    assert not (pkg / "published" / "build.py").exists()  # a repository tool, not part of the package
    # the repository's paths are links to the package copies: one copy of each file
    assert (REPO / "configs" / "published").resolve() == (REPO / "twodmse" / "published").resolve()
    assert (REPO / "configs" / "mteb_tasks.yaml").resolve() == (REPO / "twodmse" / "mteb_tasks.yaml").resolve()


def test_installed_copy_is_imported_and_finds_task_lists(installed):
    venv, outside = installed
    out = run([venv / "bin" / "python", "-c",
               "import twodmse, twodmse.methods; from twodmse import mteb_eval; print(twodmse.__file__); "
               "print(twodmse.methods.__file__); print(mteb_eval.TASK_LISTS); "
               "print(','.join(mteb_eval.task_names('default'))); print(len(mteb_eval.task_names('paper')))"],
              cwd=outside).stdout.split("\n")
    pkg = site_packages(venv) / "twodmse"
    assert Path(out[0]) == pkg / "__init__.py"
    assert Path(out[1]).is_relative_to(pkg)  # subpackages are installed too
    assert Path(out[2]) == pkg / "mteb_tasks.yaml"
    assert out[3].split(",") == ["STSBenchmark", "SICK-R", "STS12", "STS13", "STS14", "STS15", "STS16"]
    assert int(out[4]) > 7
    # every command's module imports (the parser of `twodmse --help` loads them all)
    assert "report" in run([venv / "bin" / "twodmse", "--help"], cwd=outside).stdout


def test_installed_report_finds_published_numbers(installed):
    venv, outside = installed
    # RESULTS/<backbone>/<method>/seed<k>/grid.csv as `twodmse eval` writes it (no method column)
    for bonus, method in enumerate(("baseline", "2dmse")):
        rows = [dict(model="tiny", dataset=ds, split="all" if ds == "sickr" else "test", layer=layer, dim=dim,
                     spearman=40 + 10 * layer + dim / 8 + bonus, pearson=0.0, n_pairs=10)
                for ds in STS_TEST for layer in (1, 2, 3) for dim in (8, 16, 32)]
        path = outside / "results" / "tiny" / method / "seed1" / "grid.csv"
        path.parent.mkdir(parents=True)
        pd.DataFrame(rows).to_csv(path, index=False)
    result = run([venv / "bin" / "twodmse", "report", "--results", "results", "--out", "figs", "--formats", "png"],
                 cwd=outside)
    assert "published" not in result.stderr, result.stderr  # no 'no published CSVs in ...' note
    index = (outside / "figs" / "index.md").read_text()
    assert "- published_tiny_avg.png" in index and "published" not in index.split("Skipped:")[-1]
    assert (outside / "figs" / "published_tiny_avg.png").stat().st_size > 10_000
