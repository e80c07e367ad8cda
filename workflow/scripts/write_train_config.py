"""Snakemake script (rule train_config): the `twodmse train --config` file of one run, from the rule's params.

With a sweep, a method's run at a seed the sweep did not run at takes the values its selection.json picked (a
settle run, those of its rank in the method's shortlist.json); where separate's depths were picked one by one
(picked_per_depth), a depth whose values differ from the full depth's gets them in method_options.per_depth."""
import json
from pathlib import Path

import yaml


def picked_settings(selection, settings):
    """The train keys a selection sets: the pick's values, and per-depth values where they differ from them."""
    values = dict(selection["picked"]["values"])
    own = {int(k): p["values"] for k, p in selection.get("picked_per_depth", {}).items() if p["values"] != values}
    if own:
        options = dict(settings.get("method_options") or {})
        values["method_options"] = {**options, "per_depth": {k: own[k] for k in sorted(own)}}
    return values


def main(sm):
    settings = dict(sm.params.settings)
    # A settle run ("m/settle/rank2") reads its method's shortlist: its rank there is its selection. (The rank is
    # read from the run's name, not passed as a param: a new param would retrain every earlier run.)
    rank = sm.wildcards.method.rpartition("/settle/rank")[2] if "/settle/rank" in sm.wildcards.method else None
    for selection in sm.input.picked:
        chosen = json.loads(Path(selection).read_text())
        settings.update(picked_settings(chosen["ranks"][rank] if rank else chosen, settings))
    Path(sm.output[0]).write_text(yaml.safe_dump(settings, sort_keys=False))
    Path(sm.log[0]).write_text(f"wrote {sm.output[0]}" + (f" with the values picked in {sm.input.picked[0]}"
                                                          if sm.input.picked else "") + "\n")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821 (set by Snakemake's script directive)
