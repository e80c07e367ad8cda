"""Snakemake script (rule sweep_pick): the picked sweep candidate's run becomes the method's own run.

runs/<b>/<m>/seed<k>/ gets links to the candidate's model folder(s) (model/, or model_layers<k>/ for separate),
copies of its loss curves, and its train_info.json with a `sweep` entry (the picked values and selection.json),
written last as the marker. Evaluation, train_log and the report then see the method's run as usual."""
import json
import os
import shutil
from pathlib import Path

from twodmse import util


def pick(selection_file, runs, seed, out):
    selection = json.loads(Path(selection_file).read_text())
    source = Path(runs) / selection["picked"]["run"] / f"seed{seed}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for entry in out.iterdir():  # what an earlier pick (or run) left: models, curves, records
        if entry.name.startswith(("model", "loss", "train_info")):
            if entry.is_symlink() or entry.is_file():
                entry.unlink()
            else:
                shutil.rmtree(entry)
    for entry in sorted(source.iterdir()):
        if entry.name.startswith("model"):
            (out / entry.name).symlink_to(os.path.relpath(entry, out), target_is_directory=True)
        elif entry.name.startswith("loss") or (entry.name.startswith("train_info") and entry.name != "train_info.json"):
            shutil.copy2(entry, out / entry.name)
    info = json.loads((source / "train_info.json").read_text())
    info["sweep"] = {"picked": selection["picked"], "selection": str(selection_file), "rule": selection["rule"],
                     "trained_in": str(source)}
    util.write_json(out / "train_info.json", info)
    return source


def main(sm):
    out = Path(sm.output[0]).parent
    source = pick(sm.input.selection, sm.params.runs, sm.params.seed, out)
    Path(sm.log[0]).write_text(f"{out}: the run of {source}\n")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821 (set by Snakemake's script directive)
