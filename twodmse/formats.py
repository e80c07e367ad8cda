"""The files behind the datasets: the SemEval/SentEval formats (STS-B csv, SICK txt, STS12-16 input + gold,
SNLI SentEval triplets) and your own .jsonl/.csv/.tsv, read into Pairs or Triplets. A malformed file is a
DataError naming the file, the 1-based line and the fix; nothing here knows where the files live (twodmse.data)."""
import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .util import UserError

SICK_HEADER = ["pair_ID", "sentence_A", "sentence_B", "relatedness_score"]
NLI_LABELS = ("entailment", "neutral", "contradiction")
USER_COLUMNS = (("sentence1", "sentence2", "score"), ("text1", "text2", "label"), ("anchor", "positive", "negative"))
USER_FORMS = ("a .jsonl file (one JSON object per line) or a .csv/.tsv file with a header row, with the columns "
              "sentence1,sentence2,score or text1,text2,label (scored pairs) or anchor,positive,negative (triplets)")


class DataError(UserError, ValueError):
    """A data file is malformed: says which file, which 1-based line, and how to fix it."""

    def __init__(self, path, line, problem, fix):
        self.path, self.line = Path(path), line
        super().__init__(f"{path}{f', line {line}' if line else ''}: {problem}. Fix: {fix}")


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
