"""Snakemake script (rule train_config): the `twodmse train --config` file of one run, from the rule's params.

With a sweep, a method's run at a seed the sweep did not run at takes the values its selection.json picked."""
import json
from pathlib import Path

import yaml


def main(sm):
    settings = dict(sm.params.settings)
    for selection in sm.input.picked:
        settings.update(json.loads(Path(selection).read_text())["picked"]["values"])
    Path(sm.output[0]).write_text(yaml.safe_dump(settings, sort_keys=False))
    Path(sm.log[0]).write_text(f"wrote {sm.output[0]}" + (f" with the values picked in {sm.input.picked[0]}"
                                                          if sm.input.picked else "") + "\n")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821 (set by Snakemake's script directive)
