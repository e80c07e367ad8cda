# MTEB: the same grid scored by MTEB's own evaluators; offline, its STS tasks run on local copies of our data.


rule mteb:
    """Score every (layer, dim) cell of a run on MTEB tasks (`separate` is left out: one model per depth)."""
    input:
        trained=lambda w: [] if w.method == UNTRAINED else f"{run_dir(w)}/train_info.json",
        backbone=backbone_input,
        # scored by `twodmse eval` first: offline, the local STS tasks reuse the embeddings it cached
        evaluated="results/{backbone}/{method}/seed{seed}/grid.csv",
    output:
        report("results/{backbone}/{method}/seed{seed}/mteb/mteb_scores.csv", caption="../report/mteb.rst",
               category="MTEB", subcategory="{backbone}"),
    wildcard_constraints:
        method=one_of(SINGLE + [UNTRAINED]),
    params:
        model=model_of_run,
        args=mteb_args(),
    threads: config["threads"]
    log:
        "runs/logs/mteb/{backbone}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/mteb/{backbone}/{method}/seed{seed}.tsv"
    conda:
        "../envs/twodmse.yaml"
    shell:
        "OMP_NUM_THREADS={threads} twodmse mteb --model {params.model} {params.args}"
        " --name twodmse/{wildcards.backbone}-{wildcards.method}-seed{wildcards.seed}"
        " --out results/{wildcards.backbone}/{wildcards.method}/seed{wildcards.seed}/mteb > {log} 2>&1"
