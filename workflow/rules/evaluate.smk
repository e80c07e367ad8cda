# Evaluation: every (layer, dim) cell of every run on the STS sets -> results/<backbone>/<method>/seed<k>/grid.csv,
# the layout `twodmse report` reads. Embeddings are cached in cache/embeddings by checkpoint content hash.


rule evaluate:
    """Score a trained model (or, for `untrained`, the backbone as is) at every layer x width."""
    input:
        trained=lambda w: [] if w.method == UNTRAINED else f"{run_dir(w)}/train_info.json",
        manifest=ancient("results/data_manifest.json"),
        backbone=backbone_input,
    output:
        grid=report("results/{backbone}/{method}/seed{seed}/grid.csv", caption="../report/grid.rst",
                    category="Grids", subcategory="{backbone}"),
        info="results/{backbone}/{method}/seed{seed}/grid.json",
        boot="results/{backbone}/{method}/seed{seed}/bootstrap.npz",  # paired replicates (twodmse.stats)
    wildcard_constraints:
        method=one_of(SINGLE + [UNTRAINED] + SINGLE_CANDIDATES + SINGLE_SETTLE),
    params:
        model=model_of_run,
        args=run_eval_args,  # a sweep candidate: STS-B dev
    threads: config["threads"]
    log:
        "runs/logs/evaluate/{backbone}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{backbone}/{method}/seed{seed}.tsv"
    conda:
        "../envs/twodmse.yaml"
    shell:
        "OMP_NUM_THREADS={threads} twodmse eval --model {params.model} {params.args}"
        " --out results/{wildcards.backbone}/{wildcards.method}/seed{wildcards.seed} > {log} 2>&1"


rule evaluate_separate_layers:
    """`separate` trains one model per depth k (model_layers{k}/, cut to k layers): score each one."""
    input:
        trained="runs/{backbone}/{method}/seed{seed}/train_info.json",
        manifest=ancient("results/data_manifest.json"),
    output:
        directory("runs/{backbone}/{method}/seed{seed}/eval"),
    wildcard_constraints:
        method=one_of(SEPARATE + SEPARATE_CANDIDATES + SEPARATE_SETTLE),
    params:
        run=lambda w: run_dir(w),
        args=run_eval_args,
    threads: config["threads"]
    log:
        "runs/logs/evaluate/{backbone}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{backbone}/{method}/seed{seed}.tsv"
    conda:
        "../envs/twodmse.yaml"
    shell:
        """
        exec > {log} 2>&1
        for model in {params.run}/model_layers*; do
            k=${{model##*/model_layers}}
            OMP_NUM_THREADS={threads} twodmse eval --model "$model" {params.args} --out {output}/layers$k
        done
        """


rule combine_separate:
    """One grid for `separate`: from the model cut to k layers keep only its layer-k rows."""
    input:
        eval="runs/{backbone}/{method}/seed{seed}/eval",
        trained="runs/{backbone}/{method}/seed{seed}/train_info.json",  # the depths it trained
    output:
        grid=report("results/{backbone}/{method}/seed{seed}/grid.csv", caption="../report/grid.rst",
                    category="Grids", subcategory="{backbone}"),
        info="results/{backbone}/{method}/seed{seed}/grid.json",
        boot="results/{backbone}/{method}/seed{seed}/bootstrap.npz",  # paired replicates (twodmse.stats)
    wildcard_constraints:
        method=one_of(SEPARATE + SEPARATE_CANDIDATES + SEPARATE_SETTLE),
    log:
        "runs/logs/combine_separate/{backbone}/{method}/seed{seed}.log",
    conda:
        "../envs/twodmse.yaml"
    script:
        "../scripts/combine_separate.py"


# Sweep (config `sweep:`): each candidate m/sweep/<values> of a method m was trained and scored on STS-B dev by the
# rules above (results/<backbone>/m/sweep/<values>/seed<k>/grid.csv, split dev). select picks m's best by its dev
# score on m's selection target (every cell for an elastic method, (L, H) for baseline, ...); sweep_pick makes the
# picked candidate run m itself, which rule evaluate then scores on test as usual. With sweep_settle, shortlist names
# m's two best, the settle runs m/settle/rank1 and rank2 train them at the other seeds (scored on dev, as candidates),
# and select picks the better over all seeds.

localrules:
    shortlist,
    select,
    sweep_pick,


ruleorder: sweep_pick > train  # a method's run at a sweep seed is its pick, not a new training


rule shortlist:
    """With sweep_settle: a method's two best candidates at the sweep seeds on its selection target (for separate,
    each depth's two), which its settle runs train at the other seeds."""
    input:
        lambda w: [f"results/{w.backbone}/{c}/seed{s}/grid.csv" for c in candidates_of(w.method) for s in SWEEP_SEEDS],
    output:
        "results/{backbone}/{method}/sweep/shortlist.json",
    wildcard_constraints:
        method=one_of([m for m in TRAINED if settles(m)]),
    params:
        candidates=lambda w: {c: CANDIDATES[c][1] for c in candidates_of(w.method)},
        seeds=SWEEP_SEEDS,
        sweep=SWEEP,
        target=lambda w: select_target(w.method),
        ranks=SETTLE_RANKS,
    log:
        "runs/logs/shortlist/{backbone}/{method}.log",
    conda:
        "../envs/twodmse.yaml"
    script:
        "../scripts/select_sweep.py"


rule select:
    """Pick a method's sweep candidate by its mean STS-B dev score over the method's selection target (the cells it
    is for: SELECT_ON in its method file, or method_settings.<m>.select_on), averaged over seeds; with sweep_settle,
    the better of its shortlist's two over all seeds."""
    input:
        grids=lambda w: [f"results/{w.backbone}/{c}/seed{s}/grid.csv" for c in candidates_of(w.method)
                         for s in SWEEP_SEEDS],
        shortlist=lambda w: [f"results/{w.backbone}/{w.method}/sweep/shortlist.json"] if settles(w.method) else [],
        settled=lambda w: [p for seeds in settle_grids(w).values() for p in seeds.values()],
    output:
        "results/{backbone}/{method}/sweep/selection.json",
    wildcard_constraints:
        method=one_of(TRAINED),
    params:
        candidates=lambda w: {c: CANDIDATES[c][1] for c in candidates_of(w.method)},
        seeds=SWEEP_SEEDS,
        sweep=SWEEP,
        target=lambda w: select_target(w.method),
        settle=settle_grids,
    log:
        "runs/logs/select/{backbone}/{method}.log",
    conda:
        "../envs/twodmse.yaml"
    script:
        "../scripts/select_sweep.py"


rule sweep_pick:
    """The picked candidate's run as the method's run: links to its model(s), its loss curves and train_info.json
    with the selection added (at a settle seed, the settle run of the picked rank)."""
    input:
        selection="results/{backbone}/{method}/sweep/selection.json",
        trained=lambda w: [f"runs/{w.backbone}/{c}/seed{w.seed}/train_info.json" for c in
                           (candidates_of(w.method) if int(w.seed) in SWEEP_SEEDS else settle_runs(w.method))],
    output:
        "runs/{backbone}/{method}/seed{seed}/train_info.json",
    wildcard_constraints:
        method=one_of(TRAINED if CANDIDATES else []),
        seed=one_of([str(s) for s in LINKED_SEEDS]),
    params:
        runs=lambda w: f"runs/{w.backbone}",
        seed=lambda w: w.seed,
    log:
        "runs/logs/sweep_pick/{backbone}/{method}/seed{seed}.log",
    conda:
        "../envs/twodmse.yaml"
    script:
        "../scripts/sweep_pick.py"
