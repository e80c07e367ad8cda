"""Snakemake script (rule train_config): the `twodmse train --config` file of one run, from the rule's params."""
from pathlib import Path

import yaml


def main(sm):
    Path(sm.output[0]).write_text(yaml.safe_dump(dict(sm.params.settings), sort_keys=False))
    Path(sm.log[0]).write_text(f"wrote {sm.output[0]}\n")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821 (set by Snakemake's script directive)
