"""Snakemake script (rule tiny_backbone): a random BERT of L layers x H hidden for CI runs
(see twodmse.backbone.make_tiny)."""
from twodmse.backbone import make_tiny


def main(sm):
    folder = make_tiny(sm.output[0], int(sm.wildcards.layers), int(sm.wildcards.hidden))
    with open(sm.log[0], "w") as log:
        print(f"random BERT {sm.wildcards.layers} layers x {sm.wildcards.hidden} in {folder}", file=log)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821 (set by Snakemake's script directive)
