# Data: which evaluation and training sets are readable here, checked before any model work.


rule data_manifest:
    """Record where every dataset comes from (mirror, embedded package or hub), its size and a checksum of
    its pairs; fail early, naming the dataset, when one the config needs cannot be read."""
    output:
        report("results/data_manifest.json", caption="../report/data.rst", category="Data"),
    params:
        datasets=config["eval"]["datasets"],
        split=config["eval"]["split"],
        train_data=train_data_specs(),
        train_source=config["train"].get("train_source", "auto"),
    log:
        "runs/logs/data_manifest.log",
    conda:
        "../envs/twodmse.yaml"
    script:
        "../scripts/data_manifest.py"


rule tiny_backbone:
    """A random BERT with a character-level WordPiece vocabulary: a stand-in backbone for CI runs."""
    output:
        directory("runs/backbones/tiny-bert-{layers}x{hidden}"),
    wildcard_constraints:
        layers=r"\d+",
        hidden=r"\d+",
    log:
        "runs/logs/tiny_backbone/tiny-bert-{layers}x{hidden}.log",
    conda:
        "../envs/twodmse.yaml"
    script:
        "../scripts/make_tiny_backbone.py"
