"""twodmse.data: exact counts on the real mirror, reader traps on tiny files, user files, hub failure modes.

Never touches the network: hub tests run with HF_HUB_OFFLINE=1 or with the hub calls replaced by fakes.
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import needs
from twodmse import data, formats
from twodmse.data import DataError, HubUnavailable, Pairs, Triplets
from twodmse.util import HUB_OFFLINE_VARS, UserError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def mirror():
    return needs.data_mirror()  # a skip without it, a failure under CI=true (CI has ../shared/data)


@pytest.fixture
def embedded():
    return needs.embedded_stsb()


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


# ------------------------------------------------------------------ the real mirror (counts from PROVENANCE.txt)

@pytest.mark.parametrize("name,split,n", [
    ("stsb", "train", 5749), ("stsb", "dev", 1500), ("stsb", "validation", 1500), ("stsb", "test", 1379),
    ("stsb", None, 1379), ("sickr", None, 9927), ("sickr", "all", 9927), ("sickr", "train", 4500),
    ("sickr", "dev", 500), ("sickr", "trial", 500), ("sickr", "test", 4927), ("sts12", None, 3108),
    ("sts13", None, 1500), ("sts14", None, 3750), ("sts15", None, 3000), ("sts16", "test", 1186)])
def test_mirror_counts(mirror, name, split, n):
    p = data.load_eval(name, split, source="mirror")
    assert len(p) == len(p.s1) == len(p.s2) == n
    assert p.scores.dtype == np.float64 and np.isfinite(p.scores).all()
    assert p.scores.min() >= (1 if name == "sickr" else 0) and p.scores.max() <= 5
    assert p.source.startswith(f"mirror:{mirror}")
    assert all(s and s == s.strip() for s in p.s1 + p.s2)


@pytest.mark.parametrize("name,subset,n", [
    ("sts12", "SMTeuroparl", 459), ("sts12", "surprise.SMTnews", 399), ("sts13", "FNWN", 189),
    ("sts14", "deft-news", 300), ("sts15", "answers-forums", 375), ("sts15", "belief", 375),
    ("sts15", "images", 750), ("sts16", "answer-answer", 254), ("sts16", "postediting", 244),
    ("sts16", "question-question", 209)])
def test_mirror_sts_subsets_drop_unscored(mirror, name, subset, n):
    s1, s2, scores = data.read_sts_subset(data._sts_folder(mirror, name), subset)
    assert len(s1) == len(s2) == len(scores) == n


def test_mirror_first_rows(mirror):
    train, dev, test = (data.load_eval("stsb", s) for s in ("train", "dev", "test"))
    assert (train.s1[0], train.s2[0], train.scores[0]) == ("A plane is taking off.", "An air plane is taking off.", 5)
    assert (dev.s1[0], dev.scores[0]) == ("A man with a hard hat is dancing.", 5)
    assert (test.s1[0], test.s2[0], test.scores[0]) == ("A girl is styling her hair.", "A girl is brushing her hair.", 2.5)
    sick = data.load_eval("sickr", "train")
    assert sick.s1[0] == "A group of kids is playing in a yard and an old man is standing in the background"
    assert sick.s2[0] == "A group of boys in a yard is playing and a man is standing in the background"
    assert sick.scores[0] == 4.5
    assert data.load_eval("sts12").s1[0].startswith("The problem likely will mean corrective changes")
    assert data.load_eval("sts12").scores[0] == 4.4


def test_mirror_quotes_and_extra_columns_read_intact(mirror):
    # sts-test.csv line 649 has an unbalanced quote and 2 licence columns: a quoting CSV reader swallows lines here.
    test = data.load_eval("stsb", "test")
    assert test.s2[648] == 'I always go by the rule "When in doubt, throw it out!'
    assert test.s1[648] == "The rule - When in doubt throw it out!" and test.scores[648] == 4
    assert test.s1[407] == 'A young boy jumping into a pool that says "no diving".'
    sts16 = data.read_sts_subset(data._sts_folder(mirror, "sts16"), "postediting")
    assert sts16[0][0] == '"It would be a mistake to underestimate her.'  # source columns 3-4 ignored
    assert sts16[1][0] == '"It would be a mistake to the underestimate.' and sts16[2][0] == 3


def test_mirror_crlf_stripped_and_first_scored_sts15_pair(mirror):
    for line in formats._read_lines(mirror / "sick" / "SICK_test_annotated.txt"):
        assert "\r" not in line
    test = data.load_eval("sickr", "test")
    assert test.s1[0] == "There is no boy playing outdoors and there is no man smiling" and test.scores[0] == 3.3
    # belief: gold lines 1-2 are empty (unscored), so the first pair kept is input line 3
    s1, s2, scores = data.read_sts_subset(data._sts_folder(mirror, "sts15"), "belief")
    assert s1[0] == "hollywood will be required occasionally to cast english actors as good guys." and scores[0] == 2.7


def test_mirror_snli_triplets(mirror):
    t = data.load_train("nli", source="mirror")
    assert isinstance(t, Triplets) and len(t) == 5883  # zip(entailments, contradictions) per premise, dev+test
    assert (t.anchor[0], t.positive[0], t.negative[0]) == (
        "Two women are embracing while holding to go packages .", "Two woman are holding packages .",
        "The men are fighting outside a deli .")
    # well-formed; SNLI itself has 3 pairs whose entailed hypothesis repeats the premise verbatim, so a == p can occur
    assert all(a and p and n and n not in (a, p) for a, p, n in zip(t.anchor, t.positive, t.negative))
    assert sum(a == p for a, p in zip(t.anchor, t.positive)) == 3
    assert len(data.load_train("nli", source="mirror", limit=7)) == 7


def test_load_train_stsb(mirror):
    p = data.load_train("stsb", limit=10)
    assert isinstance(p, Pairs) and len(p) == 10 and p.split == "train" and p.s1[0] == "A plane is taking off."
    assert len(data.load_train("stsb")) == 5749


def manifest_checksum():
    spec = importlib.util.spec_from_file_location("data_manifest", REPO / "workflow" / "scripts" / "data_manifest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.checksum


@pytest.mark.parametrize("name", data.EVAL_DATASETS)
def test_mirror_contents_equal_the_committed_manifest(mirror, name):
    # Every pair, sentence and score as the committed results read them (results/data_manifest.json: the workflow's
    # sha256 over the rows), not just their count.
    want = json.loads((REPO / "results" / "data_manifest.json").read_text())["eval"][name]
    p = data.load_eval(name, source="mirror")
    assert (p.split, len(p)) == (want["split"], want["n_pairs"])
    assert manifest_checksum()(p.s1, p.s2, p.scores) == want["sha256"]


@pytest.mark.parametrize("source", ["mirror", "embedded"])
def test_stsb_train_equals_the_committed_manifest(source):
    (needs.data_mirror if source == "mirror" else needs.embedded_stsb)()
    want = json.loads((REPO / "results" / "data_manifest.json").read_text())["train"]["stsb"]
    p = data.load_train("stsb", source=source)
    assert len(p) == want["n"] and manifest_checksum()(p.s1, p.s2, p.scores) == want["sha256"]


# ------------------------------------------------------------------ embedded copy (PyPI package)

def test_embedded_counts(embedded):
    for split, n in (("train", 5749), ("dev", 1500), ("test", 1379)):
        p = data.load_eval("stsb", split, source="embedded")
        assert len(p) == n and p.source == f"embedded:{embedded / data.STSB_FILES[split]}"
    assert data.available("stsb", source="embedded") and not data.available("sts12", source="embedded")


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_embedded_equals_mirror(mirror, embedded, split):
    a, b = data.load_eval("stsb", split, source="embedded"), data.load_eval("stsb", split, source="mirror")
    assert a.s1 == b.s1 and a.s2 == b.s2 and np.array_equal(a.scores, b.scores)


# ------------------------------------------------------------------ readers on tiny files with every trap

def tiny_mirror(root):
    """A mirror with the real layout, 2-3 rows per file, and the real traps."""
    stsb = ("g\tf\t2012\t0001\t5.000\tA \"quoted\" plane.\tAn air plane.\n"
            "g\tf\t2016\t0002\t1\tUnbalanced \"quote.\tSecond\tlicence col\textra col\r\n"  # CRLF line
            "g\tf\t2017\t0003\t0.5\tLast one.\tNo final newline.")
    for split in ("train", "dev", "test"):
        write(root / "stsb" / "original" / f"sts-{split}.csv", stsb)
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"
    write(root / "sick" / "SICK_train.txt", f"{header}\n1\tA kid.\tA boy.\t4.5\tNEUTRAL\n")
    write(root / "sick" / "SICK_trial.txt", f"{header}\n2\tA man.\tA cat.\t1\tNEUTRAL\n")
    write(root / "sick" / "SICK_test_annotated.txt", f"{header}\r\n3\tA dog.\tA dog runs.\t3.6\tENTAILMENT\r\n")
    for year, subsets in data.STS_SUBSETS.items():
        for sub in subsets:
            folder = data._sts_folder(root, year)
            write(folder / f"STS.input.{sub}.txt", "Un scored.\tpair.\nfirst\u2028half\tsecond\tsrc1\tsrc2\nx\ty\n")
            write(folder / f"STS.gs.{sub}.txt", "\n3.2\n0\n")
    nli = root / "nli" / "snli_dev_test_senteval_format"
    for split in ("dev", "test"):
        write(nli / f"s1.{split}.txt", f"P{split} . \nP{split} . \nP{split} . \nP{split} . \nQ{split} . \n")
        write(nli / f"s2.{split}.txt", "n1 . \ne1 . \nc1 . \ne2 . \ne3 . \n")
        write(nli / f"labels.{split}.txt", "neutral\nentailment\ncontradiction\nentailment\nentailment\n")
    return root


def test_read_lines_newlines(tmp_path):
    # only "\n" ends a line; "\r" before it is dropped; the final newline does not add an empty line
    assert formats._read_lines(write(tmp_path / "a.txt", "a\r\nb\u2028c\x85d\re\r\n\n")) == ["a", "b\u2028c\x85d\re", ""]
    assert formats._read_lines(write(tmp_path / "b.txt", "\ufeffa\nb")) == ["a", "b"]  # BOM dropped, no final newline


def test_tiny_mirror_traps(tmp_path):
    root = tiny_mirror(tmp_path)
    p = data.load_eval("stsb", "dev", mirror=root)
    assert p.s1 == ['A "quoted" plane.', 'Unbalanced "quote.', "Last one."]
    assert p.s2 == ["An air plane.", "Second", "No final newline."] and list(p.scores) == [5, 1, 0.5]
    sick = data.load_eval("sickr", mirror=root)
    assert sick.split == "all" and sick.s1 == ["A kid.", "A man.", "A dog."] and list(sick.scores) == [4.5, 1, 3.6]
    sts = data.load_eval("sts16", mirror=root)
    assert len(sts) == 2 * len(data.STS_SUBSETS["sts16"])  # the unscored first pair of each subset is dropped
    assert sts.s1[:2] == ["first\u2028half", "x"] and sts.s2[:2] == ["second", "y"] and list(sts.scores[:2]) == [3.2, 0]
    t = data.load_train("nli", mirror=root)  # 'e2' has no second contradiction to pair with; 'Q' has none at all
    assert (t.anchor, t.positive, t.negative) == (["Pdev .", "Ptest ."], ["e1 ."] * 2, ["c1 ."] * 2)


def test_sources_available_and_errors(tmp_path, monkeypatch):
    root = tiny_mirror(tmp_path / "m")
    assert data.available("sts13", mirror=root) and not data.available("sts13", source="hub", mirror=root)
    (root / "sts12-16" / "original" / "STS13-en-test" / "STS.gs.OnWN.txt").unlink()
    assert not data.available("sts13", source="mirror", mirror=root)
    with pytest.raises(UserError, match="STS.gs.OnWN.txt missing"):
        data.load_eval("sts13", source="mirror", mirror=root)
    with pytest.raises(UserError, match="is not a folder"):
        data.mirror_dir(tmp_path / "nope")
    monkeypatch.setenv("TWODMSE_DATA", str(root))
    assert data.mirror_dir() == root and data.mirror_dir(tmp_path) == tmp_path  # argument beats env
    with pytest.raises(UserError, match="choose from stsb, sickr"):
        data.load_eval("sts17")
    with pytest.raises(UserError, match="no split 'train'"):
        data.load_eval("sts12", "train")
    with pytest.raises(UserError, match="unknown source"):
        data.load_eval("stsb", source="web")


def malformed_cases(tmp_path):
    """(callable, file name, 1-based line) for files broken in one place."""
    ok = "g\tf\t2012\t0001\t5.000\tA.\tB.\n"
    sts = tmp_path / "sts"
    write(sts / "STS.input.short.txt", "a\tb\nc\td\ne\tf\n")
    write(sts / "STS.gs.short.txt", "1\n2\n")
    write(sts / "STS.input.badgs.txt", "a\tb\nc\td\n")
    write(sts / "STS.gs.badgs.txt", "1\nhigh\n")
    write(sts / "STS.input.onefield.txt", "a\tb\nc d\n")
    write(sts / "STS.gs.onefield.txt", "1\n\n")  # even an unscored line must have both sentences
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
    nli = tmp_path / "nli"
    for split in ("dev", "test"):
        write(nli / f"s1.{split}.txt", "p\np\n")
        write(nli / f"s2.{split}.txt", "h\nh\n")
        write(nli / f"labels.{split}.txt", "entailment\nmaybe\n")
    return [
        (lambda: data.read_stsb(write(tmp_path / "few.csv", ok + ok + "g\tf\t2012\t0003\t5.000\tonly one\n")),
         "few.csv", 3),
        (lambda: data.read_stsb(write(tmp_path / "score.csv", ok + "g\tf\t2012\t0002\tfive\tA.\tB.\n")), "score.csv", 2),
        (lambda: data.read_stsb(write(tmp_path / "range.csv", ok + ok + ok + "g\tf\t2012\t4\t2014\tA.\tB.\n")),
         "range.csv", 4),
        (lambda: data.read_sick(write(tmp_path / "SICK_nohead.txt", "1\tA.\tB.\t3\tNEUTRAL\n")), "SICK_nohead.txt", 1),
        (lambda: data.read_sick(write(tmp_path / "SICK_nan.txt", header + "1\tA.\tB.\tnan\tNEUTRAL\n")),
         "SICK_nan.txt", 2),
        (lambda: data.read_sts_subset(sts, "short"), "STS.gs.short.txt", 3),
        (lambda: data.read_sts_subset(sts, "badgs"), "STS.gs.badgs.txt", 2),
        (lambda: data.read_sts_subset(sts, "onefield"), "STS.input.onefield.txt", 2),
        (lambda: data.read_snli_triplets(nli), "labels.dev.txt", 2),
        (lambda: data.load_file(write(tmp_path / "bad.jsonl", '{"anchor": "a", "positive": "b", "negative": "c"}\n'
                                      '\n{"anchor": "a", "positive": "b"\n')), "bad.jsonl", 3),
        (lambda: data.load_file(write(tmp_path / "miss.jsonl", '{"text1": "a", "text2": "b", "label": 1}\n'
                                      '{"text1": "a", "label": 0}\n')), "miss.jsonl", 2),
        (lambda: data.load_file(write(tmp_path / "label.csv", "sentence1,sentence2,score\na,b,1\nc,d,\n")),
         "label.csv", 3),
        (lambda: data.load_file(write(tmp_path / "row.tsv", "anchor\tpositive\tnegative\na\tb\tc\n\na\tb\n")),
         "row.tsv", 4),
    ]


def test_malformed_files_name_file_and_line(tmp_path):
    for load, name, line in malformed_cases(tmp_path):
        with pytest.raises(DataError) as err:
            load()
        assert err.value.line == line and err.value.path.name == name, str(err.value)
        assert f"{name}, line {line}:" in str(err.value) and "Fix:" in str(err.value)


def test_gs_longer_than_input_points_at_input(tmp_path):
    write(tmp_path / "STS.input.x.txt", "a\tb\n")
    write(tmp_path / "STS.gs.x.txt", "1\n\n2\n")
    with pytest.raises(DataError, match=r"STS\.input\.x\.txt, line 2: file ends here but STS\.gs\.x\.txt has 3"):
        data.read_sts_subset(tmp_path, "x")


# ------------------------------------------------------------------ user files

def test_user_files(tmp_path):
    rows = [{"sentence1": 'He said "hi".', "sentence2": "Hello, you.", "score": 4.2},
            {"sentence1": "x", "sentence2": "y", "score": 0}]
    p = data.load_train(str(write(tmp_path / "pairs.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")))
    assert isinstance(p, Pairs) and p.s1 == ['He said "hi".', "x"] and list(p.scores) == [4.2, 0]
    assert p.source == f"file:{tmp_path / 'pairs.jsonl'}" and p.split == "train"
    t = data.load_train(write(tmp_path / "trip.csv", 'anchor,positive,negative\n"a, b","c ""d""",e\r\nf,g,h\n'), limit=1)
    assert isinstance(t, Triplets) and (t.anchor, t.positive, t.negative) == (["a, b"], ['c "d"'], ["e"])
    p = data.load_file(write(tmp_path / "lab.tsv", 'text1\ttext2\tlabel\n"open quote\tx\t1\n'))
    assert p.s1 == ['"open quote'] and list(p.scores) == [1.0]


def test_user_file_errors_list_accepted_forms(tmp_path):
    with pytest.raises(DataError, match="anchor,positive,negative"):
        data.load_file(write(tmp_path / "cols.csv", "premise,hypothesis\na,b\n"))
    with pytest.raises(DataError, match=r"unknown file type '\.parquet'.*sentence1,sentence2,score"):
        data.load_file(tmp_path / "x.parquet")
    with pytest.raises(UserError, match="use 'stsb', 'nli' or the path of a .jsonl"):
        data.load_train("snli")
    with pytest.raises(UserError, match="does not exist"):
        data.load_train(str(tmp_path / "missing.jsonl"))


# ------------------------------------------------------------------ hub: fails fast offline, maps columns online

@pytest.fixture
def no_network(monkeypatch):
    """Replace the two hub entry points so any network attempt fails the test."""
    hf = needs.module("huggingface_hub", "pip install 'twodmse[hub]'")
    datasets = needs.module("datasets", "pip install 'twodmse[hub]'")

    def forbidden(*a, **k):
        raise AssertionError("the hub was contacted")
    monkeypatch.setattr(hf.HfApi, "dataset_info", forbidden)
    monkeypatch.setattr(datasets, "load_dataset", forbidden)
    return hf, datasets


def test_hub_offline_fails_fast_with_clear_message(monkeypatch, tmp_path, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailable, match=r"mteb/stsbenchmark-sts .*HF_HUB_OFFLINE=1.*TWODMSE_DATA"):
        data.load_eval("stsb", source="hub")
    with pytest.raises(HubUnavailable, match="SeanLee97/nli_for_simcse"):
        data.load_train("nli", source="hub")
    empty = tmp_path / "empty"
    empty.mkdir()  # auto: the mirror lacks the files, sts12 is not embedded, the hub is offline: say all three
    with pytest.raises(HubUnavailable, match=r"sts12 test: no local copy \(mirror: .*STS.input.MSRpar.txt missing; "
                                             r"only STS-B is embedded\), and cannot load mteb/sts12-sts"):
        data.load_eval("sts12", mirror=empty)


def test_hub_unreachable_does_not_retry(monkeypatch, no_network):
    hf, datasets = no_network
    for var in HUB_OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    calls = []

    def unreachable(self, repo_id, **kw):
        calls.append(repo_id)
        raise OSError("[Errno -2] Name or service not known")
    monkeypatch.setattr(hf.HfApi, "dataset_info", unreachable)
    with pytest.raises(HubUnavailable, match="OSError: .*Name or service not known"):
        data.load_eval("sts15", source="hub")
    assert calls == ["mteb/sts15-sts"]  # one probe, and load_dataset (which retries ~25 s) never called


def test_hub_columns_splits_and_nli_fallback(monkeypatch, no_network):
    hf, datasets = no_network
    for var in HUB_OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hf.HfApi, "dataset_info", lambda self, repo_id, **kw: None)
    calls = []

    def fake_load(repo_id, config=None, split=None, revision=None):
        calls.append((repo_id, config, split, revision))
        if repo_id == "SeanLee97/nli_for_simcse":
            raise ValueError("gone")
        if repo_id == "sentence-transformers/all-nli":
            return {"anchor": ["a"], "positive": ["p"], "negative": ["n"]}
        return {"sentence1": [" one ", "b"], "sentence2": ["two", "c"], "score": [3, 1]}
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    p = data.load_eval("stsb", "dev", source="hub")
    assert (p.s1, p.s2, list(p.scores), p.split) == (["one", "b"], ["two", "c"], [3.0, 1.0], "dev")
    assert calls[-1] == ("mteb/stsbenchmark-sts", None, "validation", data.HUB_IDS["stsb"][1])
    assert data.load_eval("sickr", source="hub").split == "all" and calls[-1][2] == "test"
    with pytest.raises(UserError, match="needs the mirror"):
        data.load_eval("sickr", "train", source="hub")
    t = data.load_train("nli", source="hub")
    assert (t.anchor, t.positive, t.negative, t.source) == (["a"], ["p"], ["n"], "hub:sentence-transformers/all-nli")
    assert calls[-1][:3] == ("sentence-transformers/all-nli", "triplet", "train")
