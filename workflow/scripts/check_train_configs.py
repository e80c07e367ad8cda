"""Snakemake script (rule check_train_configs): every run's `twodmse train` config checked before any training.

The same checks `twodmse train` makes when it starts (keys, types, loss keys, method options), done once for
all runs: a bad setting of the last run is reported in seconds, not after the other runs have trained."""
from pathlib import Path

from twodmse import train


class ConfigCheckFailed(Exception):
    pass


def problems_of(run, cfg):
    """Messages for what is wrong with one run's config (empty when it is fine)."""
    try:
        train.validate(cfg, source=f"run {run}")  # keys, types and ranges, the loss, the method and its options
    except train.ConfigError as e:
        return [str(e)]
    return []


def main(sm):
    problems = [p for run, cfg in sm.params.configs.items() for p in problems_of(run, dict(cfg))]
    with open(sm.log[0], "w") as log:
        print("\n".join(problems) or f"{len(sm.params.configs)} run configs are valid", file=log)
    if problems:
        # An exception, not sys.exit: this runs inside Snakemake's own process (a `run:` job), where SystemExit
        # leaves Snakemake waiting forever; an exception fails the job and ends the run with this message.
        raise ConfigCheckFailed("config check failed (fix `train` or `method_settings` in the workflow config):\n  "
                                + "\n  ".join(problems))
    Path(sm.output[0]).write_text("".join(f"{run}\n" for run in sm.params.configs))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821 (set by Snakemake's script directive)
