# Training: one run per (backbone, method, seed), in runs/ (git-ignored). train_info.json is written last by
# `twodmse train`, so it marks a finished run; a killed run leaves runs/.../checkpoint/ behind and the next
# `snakemake` call resumes from it (the checkpoint is not a declared output, so Snakemake keeps it).


rule train_config:
    """Write the `twodmse train --config` file of one run. Its params are the run's settings, so changing a
    setting in the workflow config rewrites this file and retrains that run (and only that run)."""
    input:
        picked=picked_values_input,
    output:
        "runs/{backbone}/{method}/seed{seed}/train_config.yaml",
    wildcard_constraints:
        method=one_of(TRAIN_RUNS),
    params:
        settings=run_config,
    log:
        "runs/logs/train_config/{backbone}/{method}/seed{seed}.log",
    conda:
        "../envs/twodmse.yaml"
    script:
        "../scripts/write_train_config.py"


rule check_train_configs:
    """Check every run's training config with twodmse's own checks before the first run starts.

    The configs are not `params:` on purpose: a params change would re-run this check, and Snakemake
    (9.27) then schedules nothing downstream of its ancient() output in that call. The check still runs
    whenever the marker is missing, and `twodmse train` validates its own config again at start."""
    output:
        "runs/train_configs.checked",
    log:
        "runs/logs/check_train_configs.log",
    run:
        from types import SimpleNamespace
        check = load_script("check_train_configs")
        check.main(SimpleNamespace(params=SimpleNamespace(configs=all_run_configs()), log=log, output=output))


rule train:
    """Train one model with `twodmse train` (or the configured launcher, e.g. torchrun)."""
    input:
        config="runs/{backbone}/{method}/seed{seed}/train_config.yaml",
        manifest=ancient("results/data_manifest.json"),  # data checked first; never a reason to retrain
        checked=ancient("runs/train_configs.checked"),  # all run configs too
        backbone=backbone_input,
        top=twin_input,  # separate: the baseline run whose model is its full depth
    output:
        "runs/{backbone}/{method}/seed{seed}/train_info.json",
    wildcard_constraints:
        method=one_of(TRAIN_RUNS),  # with a sweep, its candidates (rule sweep_pick makes the methods' runs)
    params:
        out=lambda w: run_dir(w),
        # How training starts: OMP threads, then `twodmse train` or the configured launcher. It does not change
        # the model, so it must not retrain: a param computed from `threads` is one Snakemake counts as derived
        # and leaves out of its params rerun trigger (as it does for one computed from input or output).
        launch=lambda w, threads: f"OMP_NUM_THREADS={threads} {train_command()}",
    threads: config["threads"]
    log:
        "runs/logs/train/{backbone}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{backbone}/{method}/seed{seed}.tsv"
    conda:
        "../envs/twodmse.yaml"
    shell:
        "{params.launch} --config {input.config} --out {params.out} > {log} 2>&1"


rule model_card:
    """The model card (README.md: the grid with intervals, how to load any cell, config, provenance) of a trained
    run, from its results. Not into the model folder: a new file there changes the checkpoint's content hash, which
    keys the embedding cache and MTEB's revision of the jobs that may still read it (`twodmse card --model` puts a
    copy there when the model is published)."""
    input:
        grid="results/{backbone}/{method}/seed{seed}/grid.csv",
        info="results/{backbone}/{method}/seed{seed}/train_info.json",
    output:
        "results/{backbone}/{method}/seed{seed}/README.md",
    wildcard_constraints:
        method=one_of(TRAINED),
    log:
        "runs/logs/model_card/{backbone}/{method}/seed{seed}.log",
    conda:
        "../envs/twodmse.yaml"
    shell:
        "twodmse card --run results/{wildcards.backbone}/{wildcards.method}/seed{wildcards.seed} > {log} 2>&1"


rule train_log:
    """Copy the loss curve(s) and the provenance of a finished run next to its results (runs/ is not kept)."""
    input:
        "runs/{backbone}/{method}/seed{seed}/train_info.json",
    output:
        report("results/{backbone}/{method}/seed{seed}/train_info.json", caption="../report/train.rst",
               category="Training", subcategory="{backbone}"),
    wildcard_constraints:
        method=one_of(TRAINED),
    params:
        run=lambda w: run_dir(w),
        out=lambda w: f"results/{w.backbone}/{w.method}/seed{w.seed}",
    log:
        "runs/logs/train_log/{backbone}/{method}/seed{seed}.log",
    conda:
        "../envs/twodmse.yaml"
    shell:
        # loss.csv, or loss_layers{{k}}.csv for separate; train_info.json last, as the marker
        "(cp -v {params.run}/loss*.csv {params.out}/ && cp -v {params.run}/train_info*.json {params.out}/) > {log} 2>&1"
