# Figures and tables. `report` is the last step of a full run; `figures` redraws them from whatever is in
# results/ now, without planning (or running) any training or evaluation: no model is loaded.


rule report:
    """Every figure (PNG+PDF) and table (markdown+LaTeX) from the grids, speed and published numbers."""
    input:
        grids(),
        speed_tables(),
        mteb_tables(),
        train_records(),
        sweep_selections(),
        ancient("results/data_manifest.json"),  # the data check; a rewrite of the same facts redraws nothing
    output:
        report(directory("figures"), patterns=["{name}.png"], caption="../report/figures.rst",
               category="Figures"),
    log:
        "runs/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../envs/twodmse.yaml"
    shell:
        "twodmse report --results results --out {output} > {log} 2>&1"


rule figures:
    """Redraw figures/ from results/ alone (no output declared, so it always runs when asked for)."""
    log:
        "runs/logs/figures.log",
    conda:
        "../envs/twodmse.yaml"
    shell:
        "twodmse report --results results --out figures 2>&1 | tee {log}"
