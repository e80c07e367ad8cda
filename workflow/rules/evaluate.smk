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
    wildcard_constraints:
        method=one_of(SINGLE + [UNTRAINED]),
    params:
        model=model_of_run,
        args=eval_args(),
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
        method=one_of(SEPARATE),
    params:
        run=lambda w: run_dir(w),
        args=eval_args(),
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
        "runs/{backbone}/{method}/seed{seed}/eval",
    output:
        grid=report("results/{backbone}/{method}/seed{seed}/grid.csv", caption="../report/grid.rst",
                    category="Grids", subcategory="{backbone}"),
        info="results/{backbone}/{method}/seed{seed}/grid.json",
    wildcard_constraints:
        method=one_of(SEPARATE),
    log:
        "runs/logs/combine_separate/{backbone}/{method}/seed{seed}.log",
    conda:
        "../envs/twodmse.yaml"
    script:
        "../scripts/combine_separate.py"
