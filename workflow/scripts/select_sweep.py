"""Snakemake script (rules shortlist and select): pick a method's sweep candidate on STS-B dev, on the cells the
method is for.

Each candidate (one combination of the swept `train` values) was trained once per sweep seed (`sweep_seeds`, default:
every seed) and scored on STS-B dev at every (layer, dim) cell. Its score is the mean dev Spearman over the method's
selection target (its SELECT_ON in twodmse/methods/, or `select_on` in the workflow's method_settings; names in
twodmse.cells.CELL_SETS): every cell for an elastic method, (L, H) for baseline, the last layer's widths for mrl,
the diagonal for starbucks; averaged over seeds. The highest wins, a tie going to the candidate first in the order of
the sweep values. `each-depth` (separate) picks each depth k on its own (k, H) cell, so each depth may get its own
values. selection.json records the target, every candidate's score on it (and its dev grid mean), the margin of
the pick over the runner-up, and the pick(s).

With sweep_settle, rule shortlist writes the two best candidates at the sweep seeds (for each-depth, each depth's
two) to shortlist.json as rank 1 and rank 2; the settle runs train each rank at the other seeds and score it on dev;
rule select then picks, per method (or depth), the rank with the better mean over every seed (a tie keeps rank 1),
and records the run behind the pick at each seed, every rank's score per seed and whether settling changed the pick."""
import json
import math
import statistics
from pathlib import Path

import pandas as pd

from twodmse import util
from twodmse.cells import CELL_SETS, cell_set


def rule_text(target, settled):
    return (f"highest mean STS-B dev Spearman over {CELL_SETS[target]} ({target}), averaged over seeds"
            + ("; the two best at the sweep seeds settled by their mean over every seed" if settled else "")
            + "; a tie goes to the candidate first in the order of the sweep values")


def dev_scores(path, target):
    """(score on the target, or {depth: score} for each-depth; the dev grid mean) of one grid.csv."""
    grid = pd.read_csv(path)
    dev = grid[(grid.dataset == "stsb") & (grid.split == "dev")]
    if dev.empty:
        raise ValueError(f"{path}: no STS-B dev rows; a sweep candidate is scored with "
                         "`twodmse eval --datasets stsb --split dev`")
    score = dev.set_index(["layer", "dim"]).spearman
    cells = cell_set(target, sorted(set(dev.layer)), sorted(set(dev.dim)))
    parts = cells if isinstance(cells, dict) else {None: cells}
    missing = [c for part in parts.values() for c in part if c not in score.index]
    if missing:
        raise ValueError(f"{path}: no STS-B dev score at cell(s) {missing} of the selection target {target}")
    on = {str(k): float(score.loc[cs].mean()) for k, cs in parts.items()}
    return (on if isinstance(cells, dict) else on["None"]), float(dev.spearman.mean())


def candidate_records(candidates, grids, target):
    """Every candidate's record: its score on the target per seed and averaged over seeds, its dev grid mean."""
    records = []
    for run, values in candidates.items():
        per_seed = {str(s): dev_scores(path, target) for s, path in grids[run].items()}
        scores = [v[0] for v in per_seed.values()]
        score = ({k: statistics.fmean(v[k] for v in scores) for k in scores[0]} if isinstance(scores[0], dict)
                 else statistics.fmean(scores))
        records.append({"run": run, "candidate": run.split("/sweep/", 1)[1], "values": dict(values), "score": score,
                        "score_per_seed": {s: v[0] for s, v in per_seed.items()},
                        "dev_grid_mean": statistics.fmean(v[1] for v in per_seed.values()),
                        "dev_grids": sorted(map(str, grids[run].values()))})
    return records


def pick_entry(record, depth=None):
    """What a selection keeps of a candidate (at one depth of each-depth: its scores there)."""
    entry = {k: record[k] for k in ("run", "candidate", "values", "score", "score_per_seed", "dev_grid_mean")}
    if depth is not None:
        entry["score"] = record["score"][depth]
        entry["score_per_seed"] = {s: v[depth] for s, v in record["score_per_seed"].items()}
    return entry


def ranked(records, depth, ranks):
    """The `ranks` best candidates (of one depth), best first, ties in sweep order, each with its margin over the
    next (None for the last)."""
    score = (lambda r: r["score"]) if depth is None else (lambda r: r["score"][depth])
    order = sorted((r for r in records if not math.isnan(score(r))), key=score, reverse=True)
    if not order:
        raise ValueError(f"every candidate's score is NaN: {[r['run'] for r in records]}")
    return [{**pick_entry(r, depth), "margin": score(r) - score(order[i + 1]) if i + 1 < len(order) else None}
            for i, r in enumerate(order[:ranks])]


def parts(records, target):
    """The parts picked one by one: [None] (the whole method), or every depth of each-depth."""
    return list(records[0]["score"]) if target == "each-depth" else [None]


def shortlist(records, target, ranks=2):
    """{rank: {"picked": entry[, "picked_per_depth": {depth: entry}]}}: the best `ranks` candidates at the sweep
    seeds (per depth for each-depth), in the shape of a selection, so a settle run is configured from its rank as a
    method's run is from its selection. The method's part is its full depth's."""
    best = {part: ranked(records, part, ranks) for part in parts(records, target)}
    out = {}
    for r in range(min(map(len, best.values()))):
        if target != "each-depth":
            out[str(r + 1)] = {"picked": best[None][r]}
        else:
            per_depth = {d: best[d][r] for d in best}
            out[str(r + 1)] = {"picked": per_depth[max(per_depth, key=int)], "picked_per_depth": per_depth}
    return out


def first_pick(records, target):
    """(the pick, {depth: pick} for each-depth or None): the best candidate at the sweep seeds, unsettled."""
    first = shortlist(records, target, ranks=1)["1"]
    return first["picked"], first.get("picked_per_depth")


def select(candidates, grids, target="all"):
    """candidates: {run name: {key: value}} in sweep order; grids: {run name: {seed: grid.csv}}; target: a name
    of CELL_SETS. Returns (every candidate's record, the pick, {depth: pick} for each-depth or None)."""
    records = candidate_records(candidates, grids, target)
    return (records, *first_pick(records, target))


def settle(method, short, settle_grids, target):
    """The final pick from a shortlist and its settle runs' dev grids ({rank: {seed: grid.csv}}): per part (the
    method, or each depth), the rank with the best mean score over the sweep seeds and the settle seeds.
    Returns (the pick, {depth: pick} for each-depth or None)."""
    scored = {str(r): {str(s): dev_scores(path, target)[0] for s, path in seeds.items()}
              for r, seeds in settle_grids.items()}

    def final(depth):
        options = []
        for rank, entry in short.items():
            e = entry["picked"] if depth is None else entry["picked_per_depth"][depth]
            settled = {s: (v if depth is None else v[depth]) for s, v in scored[rank].items()}
            per_seed = {**e["score_per_seed"], **settled}
            runs = {**{s: e["run"] for s in e["score_per_seed"]}, **{s: f"{method}/settle/rank{rank}" for s in settled}}
            options.append({**{k: e[k] for k in ("run", "candidate", "values", "dev_grid_mean")}, "rank": int(rank),
                            "score": statistics.fmean(per_seed.values()), "score_per_seed": per_seed,
                            "seed_sd": statistics.stdev(per_seed.values()) if len(per_seed) > 1 else None,
                            "runs": runs})
        best = max(options, key=lambda o: o["score"])  # max keeps the first (rank 1) of equal scores
        others = [o["score"] for o in options if o is not best]
        return {**best, "margin": best["score"] - max(others) if others else None, "changed": best["rank"] != 1,
                "first_pick": options[0]["candidate"], "ranks": options}

    if "picked_per_depth" not in short["1"]:
        return final(None), None
    per_depth = {d: final(d) for d in short["1"]["picked_per_depth"]}
    return per_depth[max(per_depth, key=int)], per_depth


def main(sm):
    candidates = dict(sm.params.candidates)
    seeds = list(sm.params.seeds)
    paths = iter(sm.input.grids if hasattr(sm.input, "grids") else sm.input)  # candidate by candidate, seed by seed
    grids = {run: {s: next(paths) for s in seeds} for run in candidates}
    target = sm.params.target
    records = candidate_records(candidates, grids, target)
    common = dict(backbone=sm.wildcards.backbone, method=sm.wildcards.method, sweep=dict(sm.params.sweep), seeds=seeds,
                  target=target, target_cells=CELL_SETS[target])
    if sm.rule == "shortlist":
        ranks = shortlist(records, target, len(sm.params.ranks))
        util.write_json(sm.output[0], util.provenance(**common, ranks=ranks, candidates=records))
        Path(sm.log[0]).write_text("".join(f"rank {r}: {v['picked']['candidate']}\n" for r, v in ranks.items()))
        return
    settle_grids = dict(sm.params.settle)
    if settle_grids:
        short = json.loads(Path(sm.input.shortlist[0]).read_text())["ranks"]
        best, per_depth = settle(sm.wildcards.method, short, settle_grids, target)
    else:
        best, per_depth = first_pick(records, target)
    util.write_json(sm.output[0], util.provenance(
        **common, rule=rule_text(target, bool(settle_grids)), settled=bool(settle_grids), picked=best,
        **({"picked_per_depth": per_depth} if per_depth else {}), candidates=records))
    picks = {k: p["candidate"] for k, p in per_depth.items()} if per_depth else best["candidate"]
    Path(sm.log[0]).write_text("".join(f"{r['candidate']}: score on {target} {r['score']}, dev grid mean "
                                       f"{r['dev_grid_mean']:.3f}\n" for r in records) + f"picked {picks}\n")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821 (set by Snakemake's script directive)
