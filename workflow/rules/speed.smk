# Speed: what each (layers, dim) cell of a backbone costs to encode and search. The architecture sets the
# cost, not the weights, so it runs once per backbone. It asks for every core (64 threads, which Snakemake caps at
# --cores), so locally no other job runs beside it and disturbs the timing.


rule speed:
    """Time encoding with the backbone really cut to k layers, and search at every width."""
    input:
        backbone=backbone_input,
    output:
        report("results/{backbone}/speed/speed.csv", caption="../report/speed.rst", category="Speed"),
    params:
        model=lambda w: backbone_model(w.backbone),
        args=speed_args(),
    threads: max(config["threads"], 64)  # locally capped at --cores: every core; SLURM: set-threads
    log:
        "runs/logs/speed/{backbone}.log",
    benchmark:
        "results/benchmarks/speed/{backbone}.tsv"
    conda:
        "../envs/twodmse.yaml"
    shell:
        "OMP_NUM_THREADS={threads} twodmse speed --model {params.model} {params.args} --threads {threads}"
        " --out results/{wildcards.backbone}/speed > {log} 2>&1"
