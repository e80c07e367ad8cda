"""Fault injection against the real `twodmse` command line: bad input, kills, a locked and a full output folder.

    python benchmarks/faults.py                  # every case, 2 at a time (about 2-3 min on 2 CPU cores)
    python benchmarks/faults.py --workflow       # plus a killed and resumed Snakemake CI run (minutes more)
    python benchmarks/faults.py --only 'kill|cache' --keep /tmp/faults   # a subset; keep the folders

What it measures: for each fault a user or the machine can cause, does `twodmse` end the way it promises?
Every case runs the real CLI (`python -m twodmse.cli ...`, or a `python -c` wrapper that patches one function
to inject a kill or a full disk, then calls twodmse.cli.main) in a subprocess, inside a temporary folder, on a
random tiny BERT (twodmse.backbone.make_tiny, 3 layers x 32) and a tiny data mirror with the real layout that
this script writes itself: no data, no download, no GPU needed (HF_HUB_OFFLINE=1, OMP_NUM_THREADS=--threads).

Two kinds of case:
  user error   bad flags, data files, configs and model folders (no weights, no tokenizer, NaN weights); a
               second run on a locked --out; a full disk. Expected: exit 2, no "Traceback" on stderr, exactly
               one `twodmse CMD: error: ...` line whose text names the culprit (a needle string per case), and
               no result (grid.csv, cached *.npy, model/, train_info.json, checkpoint/, loss.csv ...) left.
  recovery     a damaged embedding cache (truncated, same size with other bytes, record missing); a SIGKILL
               after a training step, in a checkpoint write, in the final model save and in a cache write; a
               lock file left by a SIGKILLed run; a disk that fills before the first checkpoint (exit 2, then
               the space is freed and the same command rerun). Expected: the rerun exits 0 and its results are
               identical to an unbroken reference run: grid.csv spearman and pearson (and the cache warning);
               loss.csv less its timing column pairs_per_s, and every tensor of model/model.safetensors.

One line per case: name, expected outcome, exit code(s) (of the injected run, then the rerun), what happened
(the error line, or "ok"), verdict:
  handled        the expectation is met
  WRONG RESULT   exit 0 with output that differs from the reference, or that should not exist at all
  TRACEBACK      a user-error case whose stderr holds a Python traceback
  unhandled      anything else (wrong exit code, a message that does not name the culprit, files left behind)
  not run: WHY   the fault cannot be staged here (no tmpfs mount without root; CUDA present). Such a case
                 counts in N but not as handled, and does not make the script fail.
The full-disk cases mount a 1 MB tmpfs (`mount -t tmpfs -o size=1m`, needs root) and always unmount it.
The last line is `faults: N cases, H handled, W wrong results, T tracebacks for user errors`; the exit status
is 1 when W or T > 0 or when fewer cases were handled than ran.
"""
import argparse
import concurrent.futures
import contextlib
import csv
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------------------- wrappers
# `python -c WRAPPER ARGS...`: apply one patch, then run the CLI exactly as `python -m twodmse.cli ARGS...` does.
WRAPPER = """\
import os, signal, sys
def _write_half_then_die(raw, path):  # a machine dying in the middle of a write
    with open(path, "wb") as out:
        out.write(raw[:len(raw) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
{patch}
from twodmse import cli
sys.argv[0] = "twodmse"
sys.exit(cli.main(sys.argv[1:]))
"""

# torch.save writes half of the N-th file it is asked for (the checkpoint of step N with save_every 1), then
# the process SIGKILLs itself: a machine dying in the middle of a checkpoint.
KILL_IN_TORCH_SAVE = """\
import io, torch
_real_save, _calls = torch.save, [0]
def _save(obj, f, *a, **k):
    _calls[0] += 1
    if _calls[0] < {n}:
        return _real_save(obj, f, *a, **k)
    buf = io.BytesIO()
    _real_save(obj, buf, *a, **k)
    _write_half_then_die(buf.getvalue(), f)
torch.save = _save
"""

# the final model folder gets its weights, then SIGKILL before the tokenizer and sentence-transformers files.
KILL_IN_MODEL_SAVE = """\
from twodmse import export
def _weights_then_die(model, tokenizer, pooling, max_length, tmp, *rest):  # export._write's leading arguments
    model.save_pretrained(tmp)
    os.kill(os.getpid(), signal.SIGKILL)
export._write = _weights_then_die
"""

# the embedding cache array is half written, then SIGKILL: a machine dying while eval fills its cache.
KILL_IN_CACHE_WRITE = """\
import io
import numpy as np
from twodmse import evaluate
def _half(emb, path):
    buf = io.BytesIO()
    np.save(buf, emb)
    _write_half_then_die(buf.getvalue(), path)
evaluate._save_npy = _half
"""

# right after twodmse's up-front free-space check passes, another process "fills the disk" (a filler file on
# the same file system), leaving {leave} bytes: the first checkpoint then meets a real ENOSPC.
FILL_DISK_AFTER_CHECK = """\
from twodmse import checkpoint
_real_check = checkpoint.check_space
def _check_then_fill(out, model_path):
    _real_check(out, model_path)
    st = os.statvfs({fs!r})
    try:
        with open(os.path.join({fs!r}, "filler"), "wb") as f:
            f.write(bytes(max(0, st.f_bavail * st.f_frsize - {leave})))
    except OSError:
        pass
checkpoint.check_space = _check_then_fill
"""

# holds --out's lock (as a running twodmse would) until killed
HOLD_LOCK = """\
import sys, time
from twodmse import util
with util.output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(900)
"""

ERROR_LINE = re.compile(r"^twodmse \w+: error: ", re.M)


# ------------------------------------------------------------------------------------------- plumbing

@dataclass
class Run:
    rc: object  # int, or "timeout"
    stdout: str
    stderr: str
    argv: list

    @property
    def traceback(self):
        return "Traceback (most recent call last)" in self.stderr

    def error_line(self):
        """The `twodmse CMD: error: ...` line, else the last line of stderr (a traceback's exception)."""
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ERROR_LINE.match(ln)]
        return (errors or lines or ["(no stderr)"])[-1].strip()


@dataclass
class Outcome:
    verdict: str
    exits: str
    what: str
    details: str = ""


@dataclass
class Case:
    name: str
    expect: str
    func: object
    outcome: Outcome = None
    seconds: float = 0.0


class Lab:
    """The temporary world of one session: python, environment, tiny model, tiny mirror, reference runs."""

    def __init__(self, root, python, threads, timeout):
        self.root, self.python, self.threads, self.timeout = Path(root), python, threads, timeout
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TWODMSE_")}
        self.env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                        TOKENIZERS_PARALLELISM="false", TWODMSE_CACHE=str(self.root / "default-cache"),
                        PYTHONUNBUFFERED="1")
        self.model = self.root / "tiny-bert"
        self.small_model = self.root / "tiny-bert-2x16"  # small enough to pass the free-space check of 1 MB
        self.mirror = self.root / "mirror"
        self.env["TWODMSE_DATA"] = str(self.mirror)  # where `train_data: stsb` is read from
        self.cuda, self.tmpfs = False, Tmpfs(self.root)
        self._refs, self._ref_lock = {}, threading.Lock()
        self._count = 0
        self._count_lock = threading.Lock()

    def folder(self, name):
        with self._count_lock:
            self._count += 1
            n = self._count
        path = self.root / f"{n:02d}-{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-')[:40]}"
        path.mkdir(parents=True)
        return path

    def run(self, args, cwd, patch=None, env=None, timeout=None):
        argv = ([self.python, "-c", WRAPPER.format(patch=patch)] if patch else
                [self.python, "-m", "twodmse.cli"]) + [str(a) for a in args]
        try:
            p = subprocess.run(argv, cwd=cwd, env={**self.env, **(env or {})}, capture_output=True, text=True,
                               timeout=timeout or self.timeout)
            return Run(p.returncode, p.stdout, p.stderr, argv)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            return Run("timeout", out, err, argv)

    def reference(self, key, make):
        """A reference run, made once and shared by the cases that compare with it."""
        with self._ref_lock:
            if key not in self._refs:
                self._refs[key] = make()
            return self._refs[key]

    # -------------------------------------------------------------- inputs

    def setup(self):
        from twodmse import backbone
        backbone.make_tiny(self.model, layers=3, hidden=32)
        backbone.make_tiny(self.small_model, layers=2, hidden=16)
        write_mirror(self.mirror)

    def train_config(self, folder, **changes):
        cfg = {"method": "2dmse", "model": str(self.model), "train_data": "stsb", "max_steps": 4,
               "batch_size": 4, "save_every": 1, "max_length": 32, "seed": 1, "device": "cpu", **changes}
        path = folder / "train.yaml"
        path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items()))  # JSON values are YAML
        return path

    def eval_args(self, out, cache, *extra, model=None, mirror=None):
        return ["eval", "--model", model or self.model, "--datasets", "stsb", "--mirror", mirror or self.mirror,
                "--out", out, "--cache", cache, "--batch-size", 16, *extra]

    def clean_eval(self):
        """A clean eval: its grid.csv is the reference and its cache the one the damage cases start from."""
        def make():
            folder = self.folder("reference eval")
            r = self.run(self.eval_args(folder / "out", folder / "cache"), folder)
            if r.rc != 0:
                raise RuntimeError(f"the clean reference eval failed (exit {r.rc}): {r.error_line()}")
            return folder
        return self.reference("eval", make)

    def clean_train(self):
        """An unbroken training run of the config every kill case uses."""
        def make():
            folder = self.folder("reference train")
            r = self.run(["train", "--config", self.train_config(folder), "--out", folder / "out"], folder)
            if r.rc != 0:
                raise RuntimeError(f"the unbroken reference training failed (exit {r.rc}): {r.error_line()}")
            return folder / "out"
        return self.reference("train", make)


def write(path, text, encoding="utf-8"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))


WORDS = ("a man woman child dog cat plane car guitar horse bird ball is are plays rides eats runs sits "
         "on the in with red small big old new street park table river song book").split()


def sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize() + "."


def stsb_rows(n, seed):
    rng = random.Random(seed)
    return [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{rng.uniform(0, 5):.3f}\t{sentence(rng)}\t{sentence(rng)}"
            for i in range(1, n + 1)]


def write_mirror(root):
    """A small data mirror in the real SemEval/SentEval layout (README): STS-B, SICK, STS12-16, SNLI."""
    from twodmse import data
    rng = random.Random(0)
    for split, n in (("train", 48), ("dev", 24), ("test", 24)):
        write(root / "stsb" / "original" / f"sts-{split}.csv", "\n".join(stsb_rows(n, split)) + "\n")
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"
    for i, name in enumerate(("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt")):
        rows = [f"{i * 100 + j}\t{sentence(rng)}\t{sentence(rng)}\t{rng.uniform(1, 5):.1f}\tNEUTRAL" for j in range(8)]
        write(root / "sick" / name, "\n".join([header, *rows]) + "\n")
    for year, subsets in data.STS_SUBSETS.items():
        folder = root / "sts12-16" / "original" / f"STS{year[3:]}-en-test"
        for sub in subsets:
            write(folder / f"STS.input.{sub}.txt", "".join(f"{sentence(rng)}\t{sentence(rng)}\n" for _ in range(6)))
            write(folder / f"STS.gs.{sub}.txt", "".join(f"{rng.uniform(0, 5):.2f}\n" for _ in range(6)))
    nli = root / "nli" / "snli_dev_test_senteval_format"
    for split in ("dev", "test"):
        premises = [sentence(rng) for _ in range(4)]
        write(nli / f"s1.{split}.txt", "".join(f"{p}\n" for p in premises for _ in range(3)))
        write(nli / f"s2.{split}.txt", "".join(f"{sentence(rng)}\n" for _ in range(12)))
        write(nli / f"labels.{split}.txt", "entailment\nneutral\ncontradiction\n" * 4)
    return root


# ------------------------------------------------------------------------------------------- verdicts

def leftovers(folder, patterns):
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for pat in patterns for p in folder.glob(pat)) if folder.exists() else []


EVAL_RESULTS = ("**/grid.csv", "**/grid.json", "**/*.npy")
TRAIN_RESULTS = ("**/loss.csv", "**/model", "**/train_info.json", "**/checkpoint", "**/.checkpoint.tmp")


def user_error(run, needle, folder, results=EVAL_RESULTS):
    """Verdict of a user-error case: exit 2, one message naming `needle`, no traceback, no results in folder."""
    left = leftovers(folder, results)
    line = run.error_line()
    if run.rc == 0:
        return Outcome("WRONG RESULT", "0", f"exit 0 for bad input; wrote {', '.join(left[:3]) or 'nothing'}",
                       run.stderr[-1500:])
    if run.traceback:
        return Outcome("TRACEBACK", str(run.rc), line, run.stderr[-3000:])
    problems = []
    if run.rc != 2:
        problems.append(f"exit {run.rc}, expected 2")
    if needle not in run.stderr:
        problems.append(f"message lacks {needle!r}")
    if len(ERROR_LINE.findall(run.stderr)) != 1:
        problems.append(f"{len(ERROR_LINE.findall(run.stderr))} error lines, expected 1")
    if re.search(r"^usage: ", run.stderr, re.M):
        problems.append("a usage block before the error line")
    if left:
        problems.append(f"left {', '.join(left[:3])}")
    if problems:
        return Outcome("unhandled", str(run.rc), f"{'; '.join(problems)}: {line}", run.stderr[-3000:])
    return Outcome("handled", "2", short_error(line))


def short_error(line):
    return re.sub(r"^twodmse \w+: ", "", line)


def failed_run(run, what, exits=None):
    """A run that should have exited 0 did not."""
    verdict = "unhandled"
    return Outcome(verdict, exits or str(run.rc), f"{what} exit {run.rc}: {short_error(run.error_line())}",
                   run.stderr[-3000:])


def grid_values(out):
    with open(Path(out) / "grid.csv") as f:
        return [(r["dataset"], r["split"], r["layer"], r["dim"], r["spearman"], r["pearson"])
                for r in csv.DictReader(f)]


def compare_grids(out, ref):
    """'' when grid.csv of out has exactly the cells and correlations of ref, else what differs."""
    if not (Path(out) / "grid.csv").exists():
        return "no grid.csv"
    a, b = grid_values(out), grid_values(ref)
    if len(a) != len(b):
        return f"{len(a)} cells, reference has {len(b)}"
    diff = [(x, y) for x, y in zip(a, b) if x != y]
    if diff:
        x, y = diff[0]
        return (f"{len(diff)} of {len(a)} cells differ from the clean run (first: layer {x[2]} dim {x[3]} "
                f"spearman {x[4]} vs {y[4]}, pearson {x[5]} vs {y[5]})")
    return ""


def loss_rows(out):
    with open(Path(out) / "loss.csv") as f:
        return [{k: v for k, v in row.items() if k != "pairs_per_s"} for row in csv.DictReader(f)]


def compare_training(out, ref):
    """'' when loss.csv (less its timing column) and every saved weight equal the unbroken run's."""
    out, ref = Path(out), Path(ref)
    for need in ("loss.csv", "model/model.safetensors", "train_info.json"):
        if not (out / need).exists():
            return f"no {need}"
    a, b = loss_rows(out), loss_rows(ref)
    if a != b:
        steps = [r.get("step") for r in a]
        if len(a) != len(b):
            return f"loss.csv has {len(a)} rows (steps {','.join(steps)}), the unbroken run {len(b)}"
        first = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        return f"loss.csv row {first + 1} differs: {a[first]} vs {b[first]}"
    from safetensors.numpy import load_file
    import numpy as np
    wa, wb = load_file(out / "model" / "model.safetensors"), load_file(ref / "model" / "model.safetensors")
    if wa.keys() != wb.keys():
        return f"model has tensors {sorted(set(wa) ^ set(wb))[:3]} the unbroken run lacks or has"
    diff = [k for k in wa if wa[k].shape != wb[k].shape or not np.array_equal(wa[k], wb[k])]
    if diff:
        return f"{len(diff)} of {len(wa)} weight tensors differ from the unbroken run (first: {diff[0]})"
    if (out / ".checkpoint.tmp").exists() or (out / "checkpoint").exists():
        return "a checkpoint folder is left after the finished run"
    return ""


def recovered(run, difference, note="ok", exits=None):
    """Verdict of a recovery case: exit 0 and no difference from the reference."""
    exits = exits or str(run.rc)
    if run.rc != 0:
        return failed_run(run, "rerun", exits)
    if difference:
        return Outcome("WRONG RESULT", exits, difference, run.stderr[-1500:])
    return Outcome("handled", exits, note)


def killed(run):
    return run.rc == -signal.SIGKILL


def not_killed(run, exits=None):
    return Outcome("unhandled", exits or str(run.rc),
                   f"the injected SIGKILL did not happen (exit {run.rc}): {short_error(run.error_line())}",
                   run.stderr[-3000:])


# ------------------------------------------------------------------------------------------- the cases

def eval_flag_case(flag_args, needle, **kw):
    def case(lab):
        f = lab.folder(" ".join(map(str, flag_args)))
        run = lab.run(lab.eval_args(f / "out", f / "cache", *flag_args, **kw), f)
        return user_error(run, needle, f)
    return case


def eval_model_case(remove, needle):
    def case(lab):
        f = lab.folder("model without " + remove[0])
        model = f / "model"
        shutil.copytree(lab.model, model)
        for name in remove:
            (model / name).unlink(missing_ok=True)
        run = lab.run(lab.eval_args(f / "out", f / "cache", model=model), f)
        return user_error(run, needle, f)
    return case


def eval_nan_weights(lab):
    """A diverged training's model: NaN in one weight matrix."""
    import numpy as np
    from safetensors.numpy import load_file, save_file
    f = lab.folder("model with NaN weights")
    model = f / "model"
    shutil.copytree(lab.model, model)
    weights = load_file(model / "model.safetensors")
    key = next(k for k in sorted(weights) if "layer.1." in k and k.endswith("dense.weight"))
    weights[key] = np.full_like(weights[key], np.nan)
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    run = lab.run(lab.eval_args(f / "out", f / "cache", model=model), f)
    return user_error(run, "are NaN, infinite or all zero", f)


def eval_cache_is_a_file(lab):
    f = lab.folder("cache is a file")
    (f / "cache").write_text("a file, not a folder\n")
    run = lab.run(lab.eval_args(f / "out", f / "cache"), f)
    return user_error(run, f"--cache {f / 'cache'}: cannot write there", f)


def eval_nonexistent_model(lab):
    f = lab.folder("nonexistent model")
    missing = f / "no-such-model"
    run = lab.run(lab.eval_args(f / "out", f / "cache", model=missing), f)
    return user_error(run, str(missing), f)


def eval_mirror_typo(lab):
    f = lab.folder("mirror typo")
    typo = lab.root / "mirorr"
    run = lab.run(["eval", "--model", lab.model, "--datasets", "all", "--mirror", typo, "--out", f / "out",
                   "--cache", f / "cache"], f)
    return user_error(run, f"data mirror {typo} (from the argument) is not a folder", f)


def eval_out_under_a_file(lab):
    f = lab.folder("out under a file")
    (f / "file").write_text("a file, not a folder\n")
    run = lab.run(lab.eval_args(f / "file" / "out", f / "cache"), f)
    return user_error(run, f"cannot write {f / 'file' / 'out'}", f)


def eval_cuda(lab):
    if lab.cuda:
        return Outcome("not run: a CUDA GPU is present", "-", "")
    return eval_flag_case(["--device", "cuda"], "torch sees no CUDA GPU")(lab)


def bad_data_case(split, edit, needle, command="eval"):
    """Copy the mirror, damage one STS-B file, run eval (or train on it)."""
    def case(lab):
        f = lab.folder(f"bad {split} {edit.__name__}")
        mirror = f / "mirror"
        shutil.copytree(lab.mirror / "stsb", mirror / "stsb")
        path = mirror / "stsb" / "original" / f"sts-{split}.csv"
        edit(path)
        if command == "eval":
            run = lab.run(lab.eval_args(f / "out", f / "cache", mirror=mirror), f)
            return user_error(run, needle.format(path=path), f)
        run = lab.run(["train", "--config", lab.train_config(f), "--out", f / "out"], f,
                      env={"TWODMSE_DATA": str(mirror)})
        return user_error(run, needle.format(path=path), f, TRAIN_RESULTS)
    return case


def score_not_a_number(path):
    rows = path.read_text().splitlines()
    fields = rows[1].split("\t")
    fields[4] = "five"
    rows[1] = "\t".join(fields)
    path.write_text("\n".join(rows) + "\n")


def latin1(path):
    rows = path.read_text().splitlines()
    rows[2] = rows[2].replace(".\t", " caf\u00e9.\t", 1)
    path.write_bytes(("\n".join(rows) + "\n").encode("latin-1"))


def empty(path):
    path.write_text("")


def constant_scores(path):
    rows = [r.split("\t") for r in path.read_text().splitlines()]
    path.write_text("".join("\t".join([*r[:4], "2.0", *r[5:]]) + "\n" for r in rows))


def train_config_case(needle, config=None, args=()):
    """`twodmse train` with a config the lab writes (changes=...) or none at all."""
    def case(lab):
        f = lab.folder("train config " + needle[:20])
        if config == "missing":
            cfg = f / "no-such-config.yaml"
        elif isinstance(config, str):
            cfg = f / "train.yaml"
            cfg.write_text(lab.train_config(f).read_text() + config)
        else:
            cfg = lab.train_config(f, **(config or {}))
        run = lab.run(["train", "--config", cfg, "--out", f / "out", *args], f)
        return user_error(run, needle.format(cfg=cfg), f, TRAIN_RESULTS)
    return case


def train_cuda(lab):
    if lab.cuda:
        return Outcome("not run: a CUDA GPU is present", "-", "")
    return train_config_case("device: 'cuda' asked for, but torch sees no CUDA GPU", {"device": "cuda"})(lab)


def command_flag_case(command, flags, needle, results):
    def case(lab):
        f = lab.folder(f"{command} {' '.join(flags)}")
        extra = ["--repeats", 1, "--n-docs", 100, "--n-latency", 1] if command == "speed" else []
        run = lab.run([command, "--model", lab.model, "--out", f / "out", *extra, *flags], f,
                      env={"TWODMSE_CACHE": str(f / "cache")})
        return user_error(run, needle, f, results)
    return case


def report_missing_results(lab):
    f = lab.folder("report missing results")
    missing = f / "no-results"
    run = lab.run(["report", "--results", missing, "--out", f / "out"], f)
    return user_error(run, f"results folder {missing} does not exist", f, ("**/index.md", "**/*.png", "**/*.md"))


# -------------------------------------------------------------- cache damage

def cache_damage_case(damage):
    def case(lab):
        ref = lab.clean_eval()
        f = lab.folder(f"cache {damage.__name__}")
        cache = f / "cache"
        shutil.copytree(ref / "cache", cache)
        (npy,) = cache.rglob("*.npy")
        damage(npy)
        run = lab.run(lab.eval_args(f / "out", cache), f)
        if run.rc != 0:
            return failed_run(run, "eval on the damaged cache:")
        warning = f"warning: embedding cache {npy}"
        diff = compare_grids(f / "out", ref / "out")
        if not diff and (warning not in run.stderr or "recomputing it" not in run.stderr):
            return Outcome("unhandled", "0", f"same grid, but no '{warning}: ...; recomputing it' warning",
                           run.stderr[-1500:])
        if not diff:
            diff = check_record(npy)
        line = next((ln for ln in run.stderr.splitlines() if ln.startswith("warning: embedding cache")), "")
        return recovered(run, diff, "ok, " + line.split(": ", 2)[-1].replace(str(npy), "KEY.npy")[:90])
    return case


def truncated(npy):
    npy.write_bytes(npy.read_bytes()[:-50])


def corrupted_same_size(npy):
    raw = bytearray(npy.read_bytes())
    raw[-40:] = bytes(b ^ 0x5A for b in raw[-40:])  # same size, same header, other numbers
    npy.write_bytes(bytes(raw))


def record_missing(npy):
    npy.with_suffix(".json").unlink()


def check_record(npy):
    """'' when the rewritten cache file matches its record, else what is wrong (it would be recomputed again)."""
    import numpy as np
    try:
        meta = json.loads(npy.with_suffix(".json").read_text())
        emb = np.load(npy, allow_pickle=False)
    except (OSError, ValueError) as e:
        return f"the repaired cache is unreadable: {e}"
    if hashlib.sha256(np.ascontiguousarray(emb).data).hexdigest() != meta.get("sha256"):
        return "the repaired cache file does not match its record"
    return ""


# -------------------------------------------------------------- kills

def kill_during_eval_cache_write(lab):
    ref = lab.clean_eval()
    f = lab.folder("kill in cache write")
    args = lab.eval_args(f / "out", f / "cache")
    first = lab.run(args, f, patch=KILL_IN_CACHE_WRITE)
    if not killed(first):
        return not_killed(first)
    second = lab.run(args, f)
    exits = f"{first.rc},{second.rc}"
    diff = compare_grids(f / "out", ref / "out") if second.rc == 0 else ""
    stale = [p for p in (f / "cache").rglob("*.tmp") if p.is_file()]  # the killed run's half array
    note = "ok" + (f"; the killed run's partial .KEY.npy.*.tmp ({stale[0].stat().st_size} B) stays in the "
                   f"cache folder" if stale else "")
    return recovered(second, diff, note, exits)


def kill_at_step(lab):
    ref = lab.clean_train()
    f = lab.folder("kill at step 2")
    args = ["train", "--config", lab.train_config(f), "--out", f / "out"]
    first = lab.run(args, f, env={"TWODMSE_KILL_AT_STEP": "2"})
    if not killed(first):
        return not_killed(first)
    if not (f / "out" / "checkpoint").is_dir():
        return Outcome("unhandled", str(first.rc), "killed at step 2 but no checkpoint/ was left to resume from")
    second = lab.run(args, f)
    exits = f"{first.rc},{second.rc}"
    resumed = re.search(r"resuming from .* at step (\d+)", second.stderr)
    diff = compare_training(f / "out", ref) if second.rc == 0 else ""
    if not diff and not resumed:
        diff = "the rerun did not say it resumed from the checkpoint"
    return recovered(second, diff, f"ok, resumed at step {resumed and resumed[1]}, = unbroken run", exits)


def kill_during_checkpoint(lab):
    ref = lab.clean_train()
    f = lab.folder("kill in checkpoint write")
    args = ["train", "--config", lab.train_config(f), "--out", f / "out"]
    first = lab.run(args, f, patch=KILL_IN_TORCH_SAVE.format(n=2))
    if not killed(first):
        return not_killed(first)
    partial = (f / "out" / ".checkpoint.tmp").exists()
    second = lab.run(args, f)
    exits = f"{first.rc},{second.rc}"
    resumed = re.search(r"resuming from .* at step (\d+)", second.stderr)
    diff = compare_training(f / "out", ref) if second.rc == 0 else ""
    note = (f"ok, {'partial .checkpoint.tmp ignored, ' if partial else ''}resumed at step "
            f"{resumed and resumed[1]}, = unbroken run")
    return recovered(second, diff, note, exits)


def kill_during_model_save(lab):
    ref = lab.clean_train()
    f = lab.folder("kill in model save")
    args = ["train", "--config", lab.train_config(f), "--out", f / "out"]
    first = lab.run(args, f, patch=KILL_IN_MODEL_SAVE)
    if not killed(first):
        return not_killed(first)
    second = lab.run(args, f)
    exits = f"{first.rc},{second.rc}"
    resumed = re.search(r"resuming from .* at step (\d+)", second.stderr)
    diff = compare_training(f / "out", ref) if second.rc == 0 else ""
    if not diff and (f / "out" / ".model.tmp").exists():
        diff = "the killed run's partial .model.tmp is still there"
    return recovered(second, diff, f"ok, resumed at step {resumed and resumed[1]}, = unbroken run", exits)


def hold_lock(lab, out):
    holder = subprocess.Popen([lab.python, "-c", HOLD_LOCK, str(out)], env=lab.env, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    line = holder.stdout.readline().strip()
    if line != "held":
        holder.kill()
        holder.wait()
        raise RuntimeError(f"the lock holder did not start (said {line!r})")
    return holder


def second_run_on_locked_out(command):
    def case(lab):
        f = lab.folder(f"locked out {command}")
        out = f / "out"
        holder = hold_lock(lab, out)
        try:
            if command == "train":
                run = lab.run(["train", "--config", lab.train_config(f), "--out", out], f)
                results = TRAIN_RESULTS
            else:
                run = lab.run(lab.eval_args(out, f / "cache"), f)
                results = EVAL_RESULTS
            return user_error(run, f"--out {out} is being written by another run (PID {holder.pid} ", f, results)
        finally:
            holder.kill()
            holder.wait()
    return case


def stale_lock_taken_over(lab):
    ref = lab.clean_train()
    f = lab.folder("stale lock")
    out = f / "out"
    holder = hold_lock(lab, out)
    holder.kill()  # SIGKILL: no finally runs, the lock file stays
    holder.wait()
    from twodmse import util
    lock = out / util.LOCK_NAME
    left = lock.exists()
    run = lab.run(["train", "--config", lab.train_config(f), "--out", out], f)
    diff = compare_training(out, ref) if run.rc == 0 else ""
    if not diff and lock.exists():
        diff = "the lock file is still there after the run finished"
    note = "ok, " + ("the dead holder's lock file was taken over" if left else "(SIGKILL left no lock file)")
    return recovered(run, diff, note, f"{holder.returncode},{run.rc}")


# -------------------------------------------------------------- full disk

class Tmpfs:
    """A 1 MB tmpfs mounted for the full-disk cases; unmounted by close() (always called, in a finally)."""

    def __init__(self, root):
        self.path, self.mounted, self.why, self.lock = Path(root) / "tmpfs", False, None, threading.Lock()
        self.busy = threading.Lock()  # one case at a time fills it

    def get(self):
        with self.lock:
            if not self.mounted and self.why is None:
                self.path.mkdir(exist_ok=True)
                try:
                    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(self.path)],
                                       capture_output=True, text=True, timeout=30)
                    self.mounted = r.returncode == 0
                    self.why = None if self.mounted else (r.stderr.strip() or f"exit {r.returncode}")
                except (OSError, subprocess.SubprocessError) as e:
                    self.why = str(e)
            return self.path if self.mounted else None

    def close(self):
        with self.lock:
            if self.mounted:
                r = subprocess.run(["umount", str(self.path)], capture_output=True, text=True)
                if r.returncode != 0:
                    subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
                self.mounted = False


def disk_case(fill):
    """Train into the 1 MB tmpfs: too small up front (fill=False), or filled by someone else after the up-front
    check (fill=True: the checkpoint write meets a real ENOSPC; then the space is freed and the same command
    rerun, which must end like an unbroken run). No partial .checkpoint.tmp may stay."""
    def case(lab):
        mnt = lab.tmpfs.get()
        if mnt is None:
            return Outcome("not run: cannot mount tmpfs", "-", lab.tmpfs.why or "")
        f = lab.folder("full disk" + (" mid-run" if fill else ""))
        cfg = lab.train_config(f, model=str(lab.small_model if fill else lab.model))
        if fill:  # the unbroken run to compare the rerun with, on a disk with room
            ref = lab.run(["train", "--config", cfg, "--out", f / "ref"], f)
            if ref.rc != 0:
                raise RuntimeError(f"the unbroken reference training failed (exit {ref.rc}): {ref.error_line()}")
        with lab.tmpfs.busy:
            sub = mnt / "disk"
            sub.mkdir()
            out = sub / "out"
            patch = FILL_DISK_AFTER_CHECK.format(fs=str(sub), leave=64 * 1024) if fill else None
            try:
                run = lab.run(["train", "--config", cfg, "--out", out], f, patch=patch)
                needle = f"cannot write {out / 'checkpoint'}" if fill else f"--out {out}: "
                # a partial loss.csv may stay: the rerun's log restarts from the last checkpoint (checked below)
                results = [r for r in TRAIN_RESULTS if not (fill and r.endswith("loss.csv"))]
                outcome = user_error(run, needle, sub, results)
                if outcome.verdict != "handled" or not fill:
                    return outcome
                (sub / "filler").unlink(missing_ok=True)  # space freed: the same command again
                again = lab.run(["train", "--config", cfg, "--out", out], f)
                return recovered(again, compare_training(out, f / "ref") if again.rc == 0 else "",
                                 outcome.what.split(" (")[0] + "; space freed, rerun = unbroken run",
                                 f"{run.rc},{again.rc}")
            finally:
                shutil.rmtree(sub, ignore_errors=True)
    return case


# -------------------------------------------------------------- workflow

def workflow_killed_and_resumed(lab):
    """SIGKILL a `snakemake --configfile configs/ci.yaml` run (Snakemake and its jobs) once a training has
    started, `--unlock`, rerun: exit 0 and every output of the CI run present."""
    f = lab.folder("workflow")
    wd = f / "wd"
    env = {**lab.env, "TWODMSE_DATA": str(lab.mirror),
           "PATH": os.pathsep.join([str(Path(lab.python).parent), os.environ.get("PATH", "")])}
    base = [lab.python, "-m", "snakemake", "--configfile", "configs/ci.yaml", "-d", str(wd)]
    log = open(f / "first.log", "w")
    first = subprocess.Popen([*base, "--cores", "2"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    deadline, when = time.time() + 600, None
    while time.time() < deadline and first.poll() is None:
        if list((wd / "runs").glob("*/*/seed*/loss.csv")) if (wd / "runs").exists() else []:
            when = "training had started"
            break
        time.sleep(0.1)
    if first.poll() is not None:
        log.close()
        return Outcome("unhandled", str(first.returncode), "the CI run ended before it could be killed",
                       (f / "first.log").read_text()[-3000:])
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    log.close()
    unlock = subprocess.run([*base, "--unlock"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if unlock.returncode != 0:
        return Outcome("unhandled", f"{first.returncode},{unlock.returncode}", "snakemake --unlock failed",
                       unlock.stderr[-3000:])
    second = subprocess.run([*base, "--cores", "2"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=1200)
    run = Run(second.returncode, second.stdout, second.stderr, base)
    exits = f"{first.returncode},{unlock.returncode},{second.returncode}"
    if second.returncode != 0:
        return Outcome("unhandled", exits, f"rerun exit {second.returncode}", second.stderr[-3000:])
    import yaml
    cfg = yaml.safe_load((REPO / "configs" / "ci.yaml").read_text())
    missing = []
    for method in cfg["methods"]:
        for seed in ([0] if method == "untrained" else cfg["seeds"]):
            grid = wd / f"results/tiny/{method}/seed{seed}/grid.csv"
            if not grid.is_file() or len(grid_values(grid.parent)) != 3 * len(cfg["eval"]["dims"]):
                missing.append(str(grid.relative_to(wd)))
            if method != "untrained" and not (wd / f"results/tiny/{method}/seed{seed}/loss.csv").is_file():
                missing.append(f"results/tiny/{method}/seed{seed}/loss.csv")
    for need in ("results/tiny/speed/speed.csv", "results/data_manifest.json", "figures/index.md"):
        if not (wd / need).is_file():
            missing.append(need)
    resumed = [p.parts[-2] for p in (wd / "runs" / "logs" / "train").rglob("*.log")
               if "resuming from" in p.read_text(errors="replace")]
    note = f"ok, killed when {when}; unlocked, rerun complete" + (
        f" ({', '.join(resumed)} resumed from its checkpoint)" if resumed else "")
    return recovered(run, f"missing after the rerun: {', '.join(missing)}" if missing else "", note, exits)



# -------------------------------------------------------------- values, from the declarations (issue 21)

def config_value_case(changes, needle=None):
    """`twodmse train` with one bad value; the needle is the message twodmse's own declaration gives for it (the
    CLI must print exactly that, once, exit 2, before any model loads or output is written)."""
    def case(lab):
        from twodmse import train_config
        f = lab.folder("value " + json.dumps(changes, default=str)[:30])
        cfg = lab.train_config(f, **changes)
        expected = needle
        if expected is None:
            try:
                train_config.validate(train_config.load_config(cfg), source=str(cfg))
            except train_config.ConfigError as e:
                expected = str(e)
            else:
                return Outcome("unhandled", "-", f"harness: the declaration accepts {changes}")
        run = lab.run(["train", "--config", cfg, "--out", f / "out"], f)
        return user_error(run, expected, f, TRAIN_RESULTS)
    return case


def value_case_name(changes):
    """'train full dims=16' for {"method": "full", "method_options": {"dims": 16}}."""
    method = changes.get("method", "")
    (key, value), = [(k, v) for k, v in changes.items() if k != "method"] or [("method", method)]
    if isinstance(value, dict) and len(value) == 1:
        (sub, value), = value.items()
        key = sub if key == "method_options" else f"{key}.{sub}"
    return f"train {method + ' ' if key != 'method' else ''}{key}={value!r}"[:40]


def declared_value_cases():
    """One case per declared key (twodmse.schema.Value): the train keys, the loss keys and every method's options,
    each set to the first of its declaration's bad values; a key added later gets its case here by itself."""
    from twodmse import losses, methods, train_config
    out = []
    for key, value in train_config.CONFIG.items():
        out.append({key: value.bad_values()[0]})
    out += [{"loss": {key: value.bad_values()[0]}} for key, value in losses.KEYS.items()]
    for name in methods.names():
        out += [{"method": name, "method_options": {key: value.bad_values()[0]}}
                for key, value in methods.options(name).items()]
    return out


# A state.pt whose unpickling runs a shell command (here: touches a file), as a foreign run folder could hold.
EVIL_STATE = """\
import os, pickle, sys
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
with open(sys.argv[1], "wb") as f:
    pickle.dump({"config": Evil()}, f)
"""


def resume_state_case(damage, needle):
    """A killed run's checkpoint/state.pt damaged or swapped, then the same command resumes it."""
    def case(lab):
        f = lab.folder("resume " + damage)
        cfg = lab.train_config(f)
        out = f / "out"
        run = lab.run(["train", "--config", cfg, "--out", out], f, env={"TWODMSE_KILL_AT_STEP": "2"})
        if not killed(run):
            return not_killed(run)
        state = out / "checkpoint" / "state.pt"
        marker = f / "pwned"
        if damage == "pickle that runs a command":
            subprocess.run([lab.python, "-c", EVIL_STATE, state, marker], check=True)
        elif damage == "truncated":
            state.write_bytes(state.read_bytes()[:100])
        elif damage == "empty":
            state.write_bytes(b"")
        elif damage == "of another model":
            import torch
            torch.save({"step": 1, "model": {"x": torch.zeros(1)}}, state)
        run = lab.run(["train", "--config", cfg, "--out", out], f)
        if marker.exists():
            return Outcome("WRONG RESULT", str(run.rc), "unpickling state.pt ran the planted command")
        outcome = user_error(run, needle, f, ("**/model", "**/train_info.json"))
        if outcome.verdict == "handled" and "--no-resume" not in run.stderr:
            return Outcome("unhandled", str(run.rc), "the message does not offer --no-resume: " + outcome.what)
        return outcome
    return case


def model_weights_short_of_config(command):
    """A model folder whose config.json says 3 layers while its weights hold 2."""
    def case(lab):
        from safetensors.numpy import load_file, save_file
        f = lab.folder(f"{command} weights short of config")
        model = f / "short-model"
        shutil.copytree(lab.model, model)
        weights = load_file(model / "model.safetensors")
        save_file({k: v for k, v in weights.items() if ".layer.2." not in k}, model / "model.safetensors",
                  metadata={"format": "pt"})
        needle = "its weights do not fit its config.json"
        if command == "eval":
            run = lab.run(lab.eval_args(f / "out", f / "cache", model=model), f)
            return user_error(run, needle, f)
        run = lab.run(["train", "--config", lab.train_config(f, model=str(model)), "--out", f / "out"], f)
        return user_error(run, needle, f, TRAIN_RESULTS)
    return case


def separate_without_top_model(lab):
    """separate told to copy its full depth from a model folder that is not there: refused before depth 1 trains."""
    f = lab.folder("separate missing top_model")
    missing = f / "no-such-baseline" / "model"
    cfg = lab.train_config(f, method="separate", method_options={"top_model": str(missing)})
    run = lab.run(["train", "--config", cfg, "--out", f / "out"], f)
    return user_error(run, f"{missing.parent / 'train_info.json'} not found", f, TRAIN_RESULTS + ("**/layers*",))


def report_case(damage, needle):
    """`twodmse report` on a results folder whose one run has a damaged grid.csv or bootstrap.npz."""
    def case(lab):
        ref = lab.clean_eval() / "out"
        f = lab.folder("report " + damage)
        run_dir = f / "results" / "tiny" / "baseline" / "seed1"
        run_dir.mkdir(parents=True)
        for name in ("grid.csv", "bootstrap.npz"):
            shutil.copy(ref / name, run_dir / name)
        grid = run_dir / "grid.csv"
        rows = grid.read_text().splitlines()
        head = rows[0].split(",")
        col = {name: head.index(name) for name in ("layer", "dim", "spearman")}

        def edit_first(column, make):
            cells = rows[1].split(",")
            cells[col[column]] = make(cells[col[column]])
            rows[1] = ",".join(cells)
            grid.write_text("\n".join(rows) + "\n")

        if damage == "Spearman 150":
            edit_first("spearman", lambda v: "150.0")
        elif damage == "Spearman / 100":
            grid.write_text("\n".join([rows[0]] + [",".join(
                f"{float(c) / 100:.6f}" if i == col["spearman"] else c for i, c in enumerate(r.split(",")))
                for r in rows[1:]]) + "\n")
        elif damage == "layer 0":
            edit_first("layer", lambda v: "0")
        elif damage == "dim -8":
            edit_first("dim", lambda v: "-8")
        elif damage == "grid.csv empty":
            grid.write_text("")
        elif damage == "bootstrap.npz truncated":
            data = (run_dir / "bootstrap.npz").read_bytes()
            (run_dir / "bootstrap.npz").write_bytes(data[:len(data) // 2])
        elif damage == "bootstrap.npz not a zip":
            (run_dir / "bootstrap.npz").write_text("not a zip\n")
        run = lab.run(["report", "--results", f / "results", "--out", f / "out", "--formats", "png"], f)
        return user_error(run, needle.format(grid=grid, npz=run_dir / "bootstrap.npz"), f,
                          ("out/**/*.md", "out/**/*.png"))
    return case


def workflow_bad_method_option(lab):
    """A workflow config with an unknown method option: Snakemake must stop with the message, not hang."""
    f = lab.folder("workflow unknown method option")
    cfg = f / "bad.yaml"
    cfg.write_text((REPO / "configs" / "ci.yaml").read_text()
                   + "\nmethod_settings: {2dmse: {method_options: {foo: 1}}}\n")
    argv = [str(Path(lab.python).parent / "snakemake"), "--configfile", str(cfg), "-d", str(f / "wd"),
            "--cores", "1", "--snakefile", str(REPO / "Snakefile"), "--until", "check_train_configs"]
    try:
        p = subprocess.run(argv, cwd=REPO, env=lab.env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return Outcome("unhandled", "timeout", "Snakemake did not exit within 180 s after the failed check")
    text = p.stdout + p.stderr
    if p.returncode == 0:
        return Outcome("WRONG RESULT", "0", "Snakemake exited 0 with a bad method option")
    if "method 2dmse has no option 'foo'" not in text:
        return Outcome("unhandled", str(p.returncode), "the message lacks the option's name", text[-3000:])
    return Outcome("handled", str(p.returncode), "stopped: method 2dmse has no option 'foo'")


# ------------------------------------------------------------------------------------------- the table

def cases(with_workflow):
    c = []

    def add(name, expect, func, group):  # group: only to keep the table readable here
        c.append(Case(name, expect, func))

    E2, R0 = "exit 2", "exit 0, = ref"
    for flags, needle in [
        (["--dims", "1000,32"], "--dims: widths [1000] out of range; this model has widths 1..32"),
        (["--dims=-8"], "--dims: widths [-8] out of range"),
        (["--dims", "0"], "--dims: widths [0] out of range"),
        (["--dims", "1.5"], "expected comma-separated integers like 384,128,32, got '1.5'"),
        (["--dims", "16,16"], "--dims: widths [16] given more than once"),
        (["--batch-size=-1"], "argument --batch-size: expected an integer >= 1, got '-1'"),
        (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
        (["--max-length", "0"], "argument --max-length: expected an integer >= 1, got '0'"),
        (["--split", "bogus"], "stsb has no split 'bogus'"),
    ]:
        add("eval " + " ".join(flags), E2, eval_flag_case(flags, needle), "eval flags")
    add("eval --device cuda (no GPU)", E2, eval_cuda, "eval flags")
    add("eval --model nonexistent", E2, eval_nonexistent_model, "eval flags")
    add("eval --datasets all --mirror typo", E2, eval_mirror_typo, "eval flags")
    add("eval --out under a file", E2, eval_out_under_a_file, "eval flags")
    add("eval --cache is a file", E2, eval_cache_is_a_file, "eval flags")
    add("eval model without weights", E2, eval_model_case(["model.safetensors"], "has no weights"), "model")
    add("eval model without tokenizer files", E2,
        eval_model_case(["vocab.txt", "tokenizer.json"], "the tokenizer has 5 tokens but the model's embedding"),
        "model")
    add("eval model with NaN weights", E2, eval_nan_weights, "model")
    add("eval sts-test score not a number", E2,
        bad_data_case("test", score_not_a_number, "{path}, line 2: score 'five'"), "data")
    add("eval sts-test latin-1 bytes", E2,
        bad_data_case("test", latin1, "{path}, line 3: byte 0xe9 is not UTF-8"), "data")
    add("eval sts-test empty", E2, bad_data_case("test", empty, "stsb test has 0 scored pair(s)"), "data")
    add("eval sts-test constant gold scores", E2,
        bad_data_case("test", constant_scores, "all 24 gold scores of stsb test are 2.0"), "data")
    add("train sts-train score not a number", E2,
        bad_data_case("train", score_not_a_number, "{path}, line 2: score 'five'", command="train"), "data")
    add("train config misspelt key", E2,
        train_config_case("{cfg}: unknown key 'max_stepz' (did you mean 'max_steps'?)", "max_stepz: 4\n"), "train")
    add("train config wrong type", E2,
        train_config_case("{cfg}: 'batch_size' must be an integer >= 1; got 'four'", {"batch_size": "four"}), "train")
    add("train --config missing", E2, train_config_case("--config {cfg}: cannot read it", "missing"), "train")
    add("train --max-steps 0", E2, train_config_case("'max_steps' must be an integer >= 1, or null; got 0", args=["--max-steps", 0]),
        "train")
    add("train config device: cuda (no GPU)", E2, train_cuda, "train")
    for command, flags, needle, results in [
        ("mteb", ["--layers", "99"], "--layers: layers [99] out of range; this model has layers 1..3",
         ("**/mteb_scores.csv", "**/*.npy")),
        ("mteb", ["--dims", "0"], "--dims: widths [0] out of range", ("**/mteb_scores.csv", "**/*.npy")),
        ("mteb", ["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'",
         ("**/mteb_scores.csv", "**/*.npy")),
        ("speed", ["--layers", "99"], "--layers: layers [99] out of range; this model has layers 1..3",
         ("**/speed.csv",)),
        ("speed", ["--dims", "0"], "--dims: widths [0] out of range", ("**/speed.csv",)),
        ("speed", ["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'",
         ("**/speed.csv",)),
    ]:
        add(f"{command} {' '.join(flags)}", E2, command_flag_case(command, flags, needle, results), command)
    add("report --results missing", E2, report_missing_results, "report")
    # issue 21: values that trained nothing or backwards with exit 0, tracebacks, a hang, a resume that ran code
    for changes in ({"lr": 0.0}, {"lr": -1.0}, {"lr": float("nan")}, {"max_grad_norm": -1.0}, {"layer_lr_decay": -1.0},
                    {"weight_decay": -1.0}, {"seed": -1}, {"seed": 2 ** 33}, {"loss": {"cosine_tau": -20.0}},
                    {"loss": {"cosine_tau": 0}}, {"loss": {"cosine_w": "x"}},
                    {"method_options": {"kl_weight": "x"}}, {"method_options": {"kl_temperature": 0}},
                    {"method": "starbucks", "method_options": {"kl_weight": "x"}},
                    {"method": "full", "method_options": {"anchor_weight": "x"}},
                    {"method": "relational", "method_options": {"distill_weight": "x"}},
                    {"method": "relational", "method_options": {"distill_temperature": 0}},
                    {"method": "full", "method_options": {"dims": 16}},
                    {"method": "full", "method_options": {"dims": "abc"}},
                    {"method": "full", "method_options": {"dims": [16.5]}},
                    {"method": "full", "method_options": {"layer_weights": "bogus"}},
                    {"method": "full", "method_options": {"foo": 1}},
                    {"method": "st-matryoshka2d", "method_options": {"bogus": 1}}):
        add(value_case_name(changes), E2, config_value_case(changes), "values")
    add("train scores all equal", E2, bad_data_case("train", constant_scores, "all 48 gold scores of stsb train are 2.0",
                                                  command="train"),
        "values")
    for damage in ("pickle that runs a command", "truncated", "empty", "of another model"):
        add(f"resume, state.pt {damage}"[:40], "exit 2, nothing run", resume_state_case(damage, "state.pt"),
            "resume")
    add("eval weights short of config", E2, model_weights_short_of_config("eval"), "model")
    add("train weights short of config", E2, model_weights_short_of_config("train"), "model")
    add("eval --datasets stsb,stsb", E2, eval_flag_case(["--datasets", "stsb,stsb"], "--datasets: stsb named more than once"),
        "eval flags")
    add("separate, top_model missing", E2, separate_without_top_model, "train")
    for damage, needle in (("Spearman 150", "{grid}:2: column 'spearman' is 150.0"),
                           ("Spearman / 100", "{grid}: every Spearman lies in [-1, 1]"),
                           ("layer 0", "{grid}:2: column 'layer' is 0"), ("dim -8", "{grid}:2: column 'dim' is -8"),
                           ("grid.csv empty", "{grid}"), ("bootstrap.npz truncated", "{npz}"),
                           ("bootstrap.npz not a zip", "{npz}")):
        add(f"report, {damage}", E2, report_case(damage, needle), "report")
    add("snakemake, unknown method option", "exit != 0, no hang", workflow_bad_method_option, "workflow")
    for changes in declared_value_cases():
        add(value_case_name(changes), E2, config_value_case(changes), "declared")
    add("cache KEY.npy truncated", "exit 0, warning, = ref", cache_damage_case(truncated), "cache")
    add("cache KEY.npy same size, bytes changed", "exit 0, warning, = ref", cache_damage_case(corrupted_same_size),
        "cache")
    add("cache KEY.json record missing", "exit 0, warning, = ref", cache_damage_case(record_missing), "cache")
    add("kill eval in cache write, rerun", R0, kill_during_eval_cache_write, "kill")
    add("kill train after step 2, rerun", R0, kill_at_step, "kill")
    add("kill train in checkpoint write, rerun", R0, kill_during_checkpoint, "kill")
    add("kill train in final model save, rerun", R0, kill_during_model_save, "kill")
    add("train while --out is locked", "exit 2, PID", second_run_on_locked_out("train"), "lock")
    add("eval while --out is locked", "exit 2, PID", second_run_on_locked_out("eval"), "lock")
    add("lock file of a SIGKILLed run", R0, stale_lock_taken_over, "lock")
    add("train into a 1 MB tmpfs", E2, disk_case(fill=False), "disk")
    add("train, disk fills before checkpoint", "exit 2; rerun = ref", disk_case(fill=True), "disk")
    if with_workflow:
        add("snakemake ci killed, unlock, rerun", "exit 0, all outputs", workflow_killed_and_resumed, "workflow")
    return c


def run_case(lab, case):
    start = time.perf_counter()
    try:
        case.outcome = case.func(lab)
    except Exception as e:  # a failure of the harness itself, shown as such
        import traceback
        case.outcome = Outcome("unhandled", "-", f"harness: {type(e).__name__}: {e}", traceback.format_exc())
    case.seconds = time.perf_counter() - start
    return case


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2, help="cases run side by side (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every twodmse process (default 1)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds one twodmse process may take (default 600)")
    ap.add_argument("--python", default=sys.executable, help="python with twodmse installed (default: this one)")
    ap.add_argument("--only", help="run only the cases whose name matches this regular expression")
    ap.add_argument("--workflow", action="store_true",
                    help="also SIGKILL a Snakemake CI run mid-way, --unlock and rerun it (takes minutes)")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder, removed)")
    ap.add_argument("--width", type=int, default=96, help="characters of 'what happened' shown (default 96)")
    ap.add_argument("--verbose", action="store_true", help="print the stderr tail of every case, not only failures")
    args = ap.parse_args()

    os.environ["HF_HUB_OFFLINE"] = "1"
    table = cases(args.workflow)
    if args.only:
        table = [c for c in table if re.search(args.only, c.name)]
    started = time.perf_counter()
    root = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="twodmse-faults-"))
    if args.keep:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    lab = Lab(root, args.python, args.threads, args.timeout)
    try:
        import torch
        lab.cuda = torch.cuda.is_available()
        torch.set_num_threads(args.threads)
        with contextlib.redirect_stderr(io.StringIO()):  # transformers' "Writing model shards" bars
            lab.setup()
        print(f"{len(table)} cases in {root} ($TMP), {args.jobs} at a time, {args.threads} thread(s) each; "
              f"model {lab.model.name} (3 layers x 32), mirror with 24 STS-B test pairs", flush=True)
        header = f"{'case':<40} {'expected':<22} {'exit':<6} {'what happened':<{args.width}} verdict"
        print(header)
        print("-" * len(header))
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [pool.submit(run_case, lab, c) for c in table]
            for fut in futures:  # in table order, each as soon as it and those above it are done
                c = fut.result()
                o = c.outcome
                o.what = o.what.replace(str(root), "$TMP")
                what = o.what if len(o.what) <= args.width else o.what[:args.width - 3] + "..."
                print(f"{c.name:<40} {c.expect:<22} {o.exits:<6} {what:<{args.width}} {o.verdict}", flush=True)
    finally:
        lab.tmpfs.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    ran = [c for c in table if not c.outcome.verdict.startswith("not run")]
    for c in table:
        o = c.outcome
        if o.verdict != "handled" and not o.verdict.startswith("not run") or args.verbose:
            print(f"\n--- {c.name}: {o.verdict} ({c.seconds:.1f} s)\n{o.what}")
            if o.details:
                print(o.details.rstrip())
    n = len(table)
    h = sum(c.outcome.verdict == "handled" for c in table)
    w = sum(c.outcome.verdict == "WRONG RESULT" for c in table)
    t = sum(c.outcome.verdict == "TRACEBACK" for c in table)
    slowest = max(table, key=lambda c: c.seconds, default=None)
    print(f"\nwall time {time.perf_counter() - started:.0f} s"
          + (f"; slowest case: {slowest.name} ({slowest.seconds:.0f} s)" if slowest else ""))
    print(f"faults: {n} cases, {h} handled, {w} wrong results, {t} tracebacks for user errors")
    return 1 if w or t or h < len(ran) else 0


if __name__ == "__main__":
    sys.exit(main())
