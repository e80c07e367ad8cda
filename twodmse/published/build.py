"""Turn the hand-collected published numbers into tidy CSVs with normalised names.

    python twodmse/published/build.py [--src ../shared/published --src twodmse/published/sources]
                                      [--out twodmse/published]

Reads the CSVs described in ../shared/published/SOURCES.md, and those this project collected itself in
twodmse/published/sources/ (its README says how), and writes one tidy CSV per source family next to this script: twodmse/published/, package data that `twodmse report`
reads (configs/published links there). Numbers are copied, never computed: the only change
is the x100 rescale of scores that were published as fractions (0.444 -> 44.4),
done in decimal arithmetic, with the published string kept in `value_published`.
"""
import argparse
import sys
from decimal import Decimal
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a plain script without installing the package
from twodmse.util import write_csv  # noqa: E402

COLUMNS = ["source_id", "source_url", "commit", "version", "table", "method", "method_label",
           "variant", "backbone", "backbone_label", "num_layers", "hidden_size", "train_data",
           "dataset", "dataset_label", "metric", "metric_label", "layer", "dim", "value",
           "value_published", "scale", "derived", "notes"]

# source_id -> output file (one file per source family)
OUTPUT_FILE = {
    "2dmse_reproduce_readme": "ielab_2dmse_reproduce.csv",
    "starbucks_readme_tableA1": "starbucks_tableA1.csv",
    "starbucks_readme_tableA2": "starbucks_tableA2.csv",
    "starbucks_retrieval_readme": "starbucks_retrieval_example.csv",
    "st_pr2506_comment": "sentence_transformers.csv",
    "st_docs_adaptive_layer": "sentence_transformers.csv",
    "st_docs_matryoshka": "sentence_transformers.csv",
    "st_release_v2.6.0": "sentence_transformers.csv",
    "angle_repo_nli_readme": "angle.csv",
    "hf_card_angle_bert_base": "angle.csv",
    "mteb_results_repo": "mteb_results.csv",
}

# Sources whose correlations / retrieval scores are published as fractions of 1.
FRACTION_SOURCES = {"2dmse_reproduce_readme", "starbucks_readme_tableA1",
                    "starbucks_readme_tableA2", "starbucks_retrieval_readme", "mteb_results_repo"}

# (source prefix, published method label) -> normalised method. Labels are matched exactly.
METHODS = {
    "BERT": "bert",                      # full fine-tuned model, truncated (see README)
    "BERT-S": "separate",
    "MSE": "mrl",
    "2DMSE": "2dmse",
    "BERT-Separate": "separate",
    "BERT-2DMSE": "2dmse",
    "BERT-SRL": "srl",
    "SMAE-SRL (Starbucks)": "starbucks",
    "SMAE-SRL (Starbucks) - released checkpoint ielabgroup/Starbucks-msmarco": "starbucks",
    "AnglE (SeanLee97/angle-bert-base-uncased-nli-en-v1)": "angle",
    "AdaptiveLayerLoss model (2d/adaptive-layer 'loss modifiers')": "adaptive-layer",
    "AdaptiveLayerLoss model (layers truncated)": "adaptive-layer",
    "Adaptive Layer model (AdaptiveLayerLoss)": "adaptive-layer",
    "tomaarsen/mpnet-base-nli-adaptive-layer (AdaptiveLayerLoss + MultipleNegativesRankingLoss)":
        "adaptive-layer",
    "MatryoshkaLoss or no loss modifier (MNRL only)": "mrl-or-mnrl",
    "tomaarsen/mpnet-base-nli-matryoshka (MatryoshkaLoss + MNRL)": "mrl",
    "tomaarsen/mpnet-base-nli (MNRL only, standard model)": "mnrl",
    "untrained": "untrained",            # a released model scored as it is (MTEB's results)
}

# published backbone -> (normalised name, layers, hidden size); sizes are the architecture's.
BACKBONES = {
    "bert-base-uncased": ("bert-base-uncased", 12, 768),
    "SMAE-pretrained BERT-base (ielabgroup/bert-base-uncased-fineweb100bt-smae)":
        ("smae-bert-base-uncased", 12, 768),
    "SMAE-pretrained BERT-base": ("smae-bert-base-uncased", 12, 768),
    "microsoft/mpnet-base (12 layers)": ("mpnet-base", 12, 768),
    "microsoft/mpnet-base": ("mpnet-base", 12, 768),
    "not stated (docs use microsoft/mpnet-base)": ("unstated", None, None),
    "sentence-transformers/all-mpnet-base-v2": ("all-mpnet-base-v2", 12, 768),
    "sentence-transformers/all-MiniLM-L6-v2": ("all-MiniLM-L6-v2", 6, 384),
}

DATASETS = {
    "average of STS datasets (STS-B, STS12, STS13, STS14, STS15, STS16, SICK-R test per inference scripts)": "avg",
    "average of STS-B, STS12-16, SICK-R": "avg",
    "average of the 7 STS sets": "avg",
    "STS-B (test)": "stsb", "STSBenchmark (test)": "stsb",
    "STSBenchmark test (mteb/stsbenchmark-sts per PR eval snippet)": "stsb",
    "STSBenchmark test (mteb/stsbenchmark-sts)": "stsb",
    "not stated (docs: STSB)": "unstated",
    "SICK-R (test)": "sickr", "SICKRelatedness (test)": "sickr",
    **{f"STS{n} (test)": f"sts{n}" for n in range(12, 17)},
    "MS MARCO passage dev": "msmarco-dev",
    "TREC DL19 (passage)": "dl19", "TREC DL19 passage (dl19-passage qrels)": "dl19",
    "TREC DL20 (passage)": "dl20",
    "BEIR Db.-Ent. (domain: General)": "beir-dbpedia-entity",
    "BEIR Quora (domain: General)": "beir-quora",
    "BEIR Scidocs (domain: Scientific)": "beir-scidocs",
    "BEIR Scifact (domain: Scientific)": "beir-scifact",
    "BEIR Cli.-Fever (domain: Scientific)": "beir-climate-fever",
    "BEIR Arguana (domain: Debate)": "beir-arguana",
    "BEIR Touche20 (domain: Debate)": "beir-touche2020",
    "BEIR Fiqa (domain: Finance)": "beir-fiqa",
    "BEIR Trec-Cvd (domain: Biomedical)": "beir-trec-covid",
    "BEIR Nfcorpus (domain: Biomedical)": "beir-nfcorpus",
    "BEIR Fever (domain: Wiki)": "beir-fever",
    "BEIR Hpqa (domain: Wiki)": "beir-hotpotqa",
    "BEIR average (the 12 listed datasets)": "beir-avg",
    # MTEB task names (mteb_results_repo)
    "STSBenchmark": "stsb", "SICK-R": "sickr", **{f"STS{n}": f"sts{n}" for n in range(12, 17)},
}

METRICS = {
    # README says Pearson, the repo's scripts store spearman_cosine: kept ambiguous on purpose.
    "Pearson correlation (as stated in README; see notes)": "pearson_or_spearman",
    "Spearman's correlation": "spearman",
    "Spearman's correlation (average)": "spearman",
    "Spearman correlation x100 (card metadata 'metrics: spearmanr'; table itself does not name the metric)": "spearman",
    "STSB Spearman (x100, approx)": "spearman_approx",
    "STSB Spearman (x100), approx": "spearman_approx",
    "nDCG@10": "ndcg@10", "nDCG@10 (trec_eval ndcg_cut_10)": "ndcg@10",
    "MRR@10": "mrr@10",
    "speedup (x) vs 12 layers": "speedup", "speedup (x)": "speedup",
    "speedup (x), approx": "speedup_approx",
    "speedup (x), range low": "speedup_range_low", "speedup (x), range high": "speedup_range_high",
    "speedup (x) on GPU": "speedup_gpu", "speedup (x) on CPU": "speedup_cpu",
    "performance loss (%) vs 12 layers": "loss_pct", "performance loss (%), approx": "loss_pct_approx",
    "performance reduction (%)": "loss_pct",
    "% of max performance preserved (Spearman)": "kept_pct",
    "% of (full-model) performance preserved": "kept_pct",
    "cosine_spearman": "spearman",       # MTEB's main score on STS tasks
}


def variant(source_id, table):
    # ielab runs every method twice: V1 = sentence-transformers, V2 = AnglE with ESE.
    if source_id == "2dmse_reproduce_readme":
        return {"V1": "v1", "V2": "v2"}[table.split(" - ")[1].split()[0]]
    if source_id == "starbucks_retrieval_readme":
        return "released-checkpoint"
    return ""


def lookup(table, key, what, path):
    if key not in table:
        raise SystemExit(f"{path}: unknown {what} {key!r}; add it to {what.upper()}S in {__file__}")
    return table[key]


def commit_of(text):
    """The first git hash in a commit_or_version cell ('' for prose versions)."""
    for word in text.replace(",", " ").replace(";", " ").replace("(", " ").split():
        if len(word) >= 7 and all(c in "0123456789abcdef" for c in word):
            return word
    return ""


def scaled(value, source_id):
    if source_id not in FRACTION_SOURCES:
        return value, 1
    # scaleb shifts the decimal point, keeping the published digits: 0.4700 -> 47.00
    return format(Decimal(value).scaleb(2), "f"), 100


def tidy(raw, path):
    rows = []
    for _, r in raw.iterrows():
        backbone, layers, hidden = lookup(BACKBONES, r.backbone, "backbone", path)
        value, scale = scaled(r.value, r.source_id)
        rows.append({
            "source_id": r.source_id, "source_url": r.source_url,
            "commit": commit_of(r.commit_or_version), "version": r.commit_or_version,
            "table": r.table, "method": lookup(METHODS, r.method, "method", path),
            "method_label": r.method, "variant": variant(r.source_id, r.table),
            "backbone": backbone, "backbone_label": r.backbone,
            "num_layers": layers or "", "hidden_size": hidden or "", "train_data": r.train_data,
            "dataset": lookup(DATASETS, r.eval_data, "dataset", path), "dataset_label": r.eval_data,
            "metric": lookup(METRICS, r.metric, "metric", path), "metric_label": r.metric,
            "layer": r.layer, "dim": r.dim, "value": value, "value_published": r.value,
            "scale": scale, "derived": r.derived, "notes": r.notes})
    return pd.DataFrame(rows, columns=COLUMNS)


def build(srcs, out):
    out = Path(out)
    files = [f for src in srcs for f in sorted(Path(src).glob("*.csv"))]
    if not files:
        raise SystemExit(f"no published CSVs in {', '.join(map(str, srcs))}; pass --src DIR (the folder with "
                         "SOURCES.md)")
    tidy_all = pd.concat([tidy(pd.read_csv(f, dtype=str, keep_default_na=False), f) for f in files])
    unknown = sorted(set(tidy_all.source_id) - set(OUTPUT_FILE))
    if unknown:
        raise SystemExit(f"source_id(s) {unknown} have no output file; add them to OUTPUT_FILE")
    written = []
    for name, part in tidy_all.groupby(tidy_all.source_id.map(OUTPUT_FILE), sort=True):
        written.append(write_csv(out / name, part.sort_values(["source_id"], kind="stable")))
        print(f"{out / name}: {len(part)} rows")
    return written


def main(argv=None):
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", action="append",
                   help="a folder of hand-collected CSVs; repeat for several (default: ../shared/published, with "
                        "its SOURCES.md, and twodmse/published/sources, this project's own)")
    p.add_argument("--out", default=str(here), help="where the tidy CSVs go (default: this folder)")
    args = p.parse_args(argv)
    build(args.src or [REPO.parent / "shared" / "published", here / "sources"], args.out)


if __name__ == "__main__":
    main()
