"""Snakemake script (rule sweep_pick): the picked sweep candidate's run becomes the method's own run.

runs/<b>/<m>/seed<k>/ gets links to the candidate's model folder(s) (model/, or model_layers<k>/ for separate),
copies of its loss curves, and its train_info.json with a `sweep` entry (the picked values and selection.json),
written last as the marker. Where separate's depths were picked one by one (picked_per_depth), model_layers<k>/ and
its loss curve and record come from depth k's pick. Evaluation, train_log and the report then see the method's run
as usual."""
import json
import os
import re
import shutil
from pathlib import Path

from twodmse import util


def run_of(picked, seed):
    """The run a pick was trained in at this seed: its candidate, or (settled, at a settle seed) its settle run."""
    return picked.get("runs", {}).get(str(seed), picked["run"])


def source_of(entry, selection, runs, seed):
    """The run folder an entry of the picked run comes from: depth k's pick for model_layers<k>/ and its files,
    else the method's pick."""
    depth = re.search(r"_?layers(\d+)", entry)
    per_depth = selection.get("picked_per_depth", {})
    picked = per_depth[depth.group(1)] if depth and depth.group(1) in per_depth else selection["picked"]
    return Path(runs) / run_of(picked, seed) / f"seed{seed}"


def pick(selection_file, runs, seed, out):
    selection = json.loads(Path(selection_file).read_text())
    source = Path(runs) / run_of(selection["picked"], seed) / f"seed{seed}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for entry in out.iterdir():  # what an earlier pick (or run) left: models, curves, records
        if entry.name.startswith(("model", "loss", "train_info")):
            if entry.is_symlink() or entry.is_file():
                entry.unlink()
            else:
                shutil.rmtree(entry)
    for name in sorted(e.name for e in source.iterdir()):
        entry = source_of(name, selection, runs, seed) / name
        if name.startswith("model"):
            (out / name).symlink_to(os.path.relpath(entry, out), target_is_directory=True)
        elif name.startswith("loss") or (name.startswith("train_info") and name != "train_info.json"):
            shutil.copy2(entry, out / name)
    info = json.loads((source / "train_info.json").read_text())
    info["sweep"] = {"picked": selection["picked"], "selection": str(selection_file), "rule": selection["rule"],
                     "trained_in": str(source)}
    if "picked_per_depth" in selection:
        info["sweep"]["picked_per_depth"] = selection["picked_per_depth"]
    util.write_json(out / "train_info.json", info)
    return source


def main(sm):
    out = Path(sm.output[0]).parent
    source = pick(sm.input.selection, sm.params.runs, sm.params.seed, out)
    Path(sm.log[0]).write_text(f"{out}: the run of {source}\n")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821 (set by Snakemake's script directive)
