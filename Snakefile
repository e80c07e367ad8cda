# twodmse workflow: train -> evaluate every (layer, dim) cell -> speed -> figures. See workflow/README.md.
#
#   snakemake                                # the CPU default (configs/default.yaml)
#   snakemake --configfile configs/ci.yaml   # a tiny end-to-end run (minutes on 2 cores)
#   snakemake --configfile configs/paper.yaml --workflow-profile profiles/slurm
#   snakemake figures                        # redraw figures/ from results/ only
#
# The workflow's entry point, at the repository root: `snakemake` run here reads it. The rules, scripts, envs,
# schema and report captions live in workflow/ (the Snakemake catalog layout) and are included below; each of
# those files names its paths relative to itself. Profiles are in profiles/, where Snakemake looks for
# profiles/default (next to this file, and in the working directory): it sets --cores etc.
from pathlib import Path

from snakemake.utils import min_version

min_version("8.0")

# configs/default.yaml unless the command line names its own config file(s): those replace it rather than
# merge into it, so a config's backbones and methods are exactly what it lists.
if not workflow.overwrite_configfiles:

    configfile: str(Path(workflow.basedir) / "configs" / "default.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/mteb.smk"
include: "workflow/rules/speed.smk"
include: "workflow/rules/report.smk"


# Quick jobs that run where Snakemake runs, never as cluster jobs. The data check is among them on purpose:
# on a cluster it runs on the login node, which can usually reach the Hugging Face hub to fetch the data.
localrules:
    all,
    figures,
    data_manifest,
    check_train_configs,
    tiny_backbone,
    train_config,
    train_log,
    combine_separate,


rule all:
    """Everything the config asks for, ending with the figures, and a model card beside every trained run."""
    default_target: True
    input:
        "figures",
        model_cards(),
