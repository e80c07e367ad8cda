"""The training loop on a tiny random BERT: outputs, sentence-transformers format, resume after SIGKILL, NaN stop."""
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from twodmse import backbone, cli, inference, methods, surgery, train, util

REPO = Path(__file__).resolve().parent.parent
SENTENCES = ["a man is playing guitar", "a woman is playing piano", "the dog is running on the road",
             "a cat is eating food", "two people sitting on a bench", "a child is playing with a ball",
             "the plane is taking off", "a man is driving a car", "a woman and a dog", "the cat is sitting"]


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny matrices: a second thread only adds waiting, badly so on a shared machine. The subprocesses below match.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def pairs_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "pairs.jsonl"
    with open(path, "w") as f:
        for i in range(20):
            a, b = rng.choice(len(SENTENCES), 2, replace=False)
            f.write(json.dumps({"sentence1": SENTENCES[a], "sentence2": SENTENCES[b],
                                "score": float(rng.integers(0, 6))}) + "\n")
    return path


def config(model, data, **over):
    cfg = {"model": str(model), "train_data": str(data), "method": "full", "batch_size": 8, "max_steps": 4,
           "lr": 1e-3, "save_every": 2, "seed": 1, "device": "cpu", "max_length": 16}
    return {**cfg, **over}


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def safetensors_weights(folder):
    from safetensors.torch import load_file
    return load_file(str(Path(folder) / "model.safetensors"))


# ------------------------------------------------------------------ config

def test_config_rejects_unknown_key_and_wrong_type():
    with pytest.raises(train.ConfigError, match="unknown key 'batchsize'.*did you mean 'batch_size'"):
        train.validate({"method": "full", "batchsize": 16})
    with pytest.raises(train.ConfigError, match="'batch_size' must be an integer >= 1; got '32'"):
        train.validate({"method": "full", "batch_size": "32"})
    with pytest.raises(train.ConfigError, match="'bf16' must be true or false, or null; got 1"):
        train.validate({"method": "full", "bf16": 1})
    with pytest.raises(train.ConfigError, match="'method' must be one of"):
        train.validate({"method": "2dmes"})
    with pytest.raises(train.ConfigError, match="remove .loss."):
        train.validate({"method": "st-matryoshka2d", "loss": {"ibn_w": 1.0}})
    cfg = train.validate(yaml.safe_load("method: mrl\nlr: 2e-5\n"))  # YAML reads 2e-5 as a string
    assert cfg["lr"] == 2e-5 and cfg["batch_size"] == 32 and cfg["warmup_ratio"] == 0.1


def test_cli_reports_bad_config_key_and_help_lists_every_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("method: full\nbatch_sise: 8\n")
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "batch_sise" in err and "batch_size" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert all(key in text for key in train.CONFIG)


# ------------------------------------------------------------------ a short run

@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_short_run_writes_loss_csv_and_sentence_transformers_model(tiny_bert, pairs_file, tmp_path, pooling):
    st = pytest.importorskip("sentence_transformers")
    out = tmp_path / "run"
    model_dir = train.train(config(tiny_bert, pairs_file, pooling=pooling), out)
    assert model_dir == out / "model"
    rows = read_csv(out / "loss.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) and float(r["pairs_per_s"]) > 0 for r in rows)
    assert float(rows[0]["lr"]) == 0.0 and float(rows[1]["lr"]) > 0  # warmup starts at 0, as transformers' does
    info = json.loads((out / "train_info.json").read_text())
    assert info["steps"] == 4 and info["final_loss"] == pytest.approx(float(rows[-1]["loss"]))
    assert info["config"]["pooling"] == pooling and "git_commit" in info and info["wall_time_s"] > 0
    assert not (out / "checkpoint").exists()  # removed once the model is saved
    pool_cfg = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    assert pool_cfg["pooling_mode_mean_tokens"] == (pooling == "mean")
    assert pool_cfg["pooling_mode_cls_token"] == (pooling == "cls")

    ours = backbone.load(str(model_dir))  # pooling read back from 1_Pooling
    assert ours.pooling == pooling
    with torch.no_grad():
        f = ours.tokenize(SENTENCES)
        expected = ours.last_layer(f["input_ids"], f["attention_mask"])[:, :16].numpy()
    got = st.SentenceTransformer(str(model_dir), truncate_dim=16, device="cpu").encode(SENTENCES)
    assert got.shape == (len(SENTENCES), 16)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(inference.load_elastic(model_dir, dim=16).encode(SENTENCES), expected, atol=1e-5)
    # training moved the weights
    before = backbone.load(str(tiny_bert), pooling=pooling)
    with torch.no_grad():
        untrained = before.last_layer(f["input_ids"], f["attention_mask"])[:, :16].numpy()
    assert np.abs(untrained - expected).max() > 1e-3


def test_finished_run_is_not_redone_and_different_config_is_refused(tiny_bert, pairs_file, tmp_path):
    out = tmp_path / "run"
    cfg = config(tiny_bert, pairs_file, max_steps=2)
    train.train(cfg, out)
    stamp = (out / "train_info.json").stat().st_mtime_ns
    train.train(cfg, out)
    assert (out / "train_info.json").stat().st_mtime_ns == stamp
    with pytest.raises(train.ConfigError, match="different config"):
        train.train({**cfg, "lr": 1e-4}, out)


# ------------------------------------------------------------------ resume after SIGKILL

def run_cli(cfg_path, out, kill_at=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TWODMSE_KILL_AT_STEP", None)
    if kill_at:
        env["TWODMSE_KILL_AT_STEP"] = str(kill_at)
    return subprocess.run([sys.executable, "-m", "twodmse.cli", "train", "--config", str(cfg_path), "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind", [True, "mlp"])
def test_exit_heads_are_trained_saved_and_applied_at_every_exit_but_the_top(tiny_bert, pairs_file, tmp_path, kind):
    st = pytest.importorskip("sentence_transformers")
    model_dir = train.train(config(tiny_bert, pairs_file, exit_heads=kind), tmp_path / "run")
    assert (model_dir / backbone.ExitHeads.FILE).is_file()
    enc = backbone.load(str(model_dir))
    assert sorted(enc.heads.maps) == ["1", "2"]  # layers 1..L-1 of the 3-layer model
    assert enc.heads.kind == backbone.head_kind(kind)  # read back from the file's keys
    fresh = backbone.ExitHeads([1, 2], 32, enc.heads.kind).state_dict()
    moved = [k for k, v in enc.heads.state_dict().items() if not torch.equal(v, fresh[k])]
    assert any(k.startswith("maps.1.") for k in moved)  # trained away from the identity
    f = enc.tokenize(SENTENCES)
    with torch.no_grad():
        mapped = enc(f["input_ids"], f["attention_mask"])
        heads, enc.heads = enc.heads, None
        plain = enc(f["input_ids"], f["attention_mask"])
        for n in (1, 2):
            torch.testing.assert_close(mapped[n - 1], heads.maps[str(n)](plain[n - 1]))
    torch.testing.assert_close(mapped[2], plain[2])  # the top layer: no head
    # a model cut to k layers ends in head k; sentence-transformers ignores the heads at full depth
    np.testing.assert_allclose(inference.load_elastic(model_dir, layers=1).encode(SENTENCES), mapped[0].numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(st.SentenceTransformer(str(model_dir), device="cpu").encode(SENTENCES),
                               mapped[2].numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", [True, "mlp"])
def test_fresh_exit_heads_change_nothing_until_trained(tiny_bert, pairs_file, tmp_path, kind):
    cfg = config(tiny_bert, pairs_file, max_steps=1, lr=1e-12, save_every=1)  # lr 1e-12: weights barely move
    plain = train.train(cfg, tmp_path / "plain")
    with_heads = train.train({**cfg, "exit_heads": kind}, tmp_path / "heads")
    assert [r["loss"] for r in read_csv(tmp_path / "plain" / "loss.csv")] == \
        [r["loss"] for r in read_csv(tmp_path / "heads" / "loss.csv")]  # same draws, same loss
    a, b = backbone.load(str(plain)), backbone.load(str(with_heads))
    f = a.tokenize(SENTENCES)
    with torch.no_grad():
        torch.testing.assert_close(a(f["input_ids"], f["attention_mask"]), b(f["input_ids"], f["attention_mask"]))


def test_exit_heads_are_refused_for_a_method_that_trains_itself(tiny_bert, pairs_file):
    with pytest.raises(train.ConfigError, match="'exit_heads' is for the grid methods; separate"):
        train.validate(config(tiny_bert, pairs_file, method="separate", exit_heads=True))
    with pytest.raises(train.ConfigError, match="'exit_heads' must be true or false or one of linear, mlp; got 'mpl'"):
        train.validate(config(tiny_bert, pairs_file, exit_heads="mpl"))


def test_pcgrad_projects_each_task_off_the_others_gradient_where_they_conflict():
    # PCGrad_tf.py: g_i - min(g_i . g_j, 0) / |g_j|^2 g_j, each against the other's original gradient, then summed
    a, b = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([-1.0, 1.0, 0.0])  # a . b = -1: they conflict
    for other, conflict in ((b, True), (-b, False)):
        p = torch.nn.Parameter(torch.zeros(3))
        p.grad = torch.ones(3)  # surgery adds to what the earlier micro-batches left
        cos = surgery.pcgrad_backward(torch.stack([p @ a, p @ other]), [p])
        want = a + other if not conflict else (a + b / 2) + (b + a / 5)
        torch.testing.assert_close(p.grad, 1 + want)
        assert cos == pytest.approx(float(a @ other / (a.norm() * other.norm())))


def test_pcgrad_trains_the_same_loss_with_the_gradient_changed_only_where_cells_conflict(tiny_bert, pairs_file,
                                                                                           tmp_path):
    cfg = config(tiny_bert, pairs_file, method="relational", exit_heads=True)
    plain = train.train(cfg, tmp_path / "plain")
    model = train.train({**cfg, "pcgrad": True}, tmp_path / "pcgrad")
    rows, plain_rows = read_csv(model.parent / "loss.csv"), read_csv(plain.parent / "loss.csv")
    assert float(rows[0]["loss"]) == pytest.approx(float(plain_rows[0]["loss"]), rel=1e-6)  # the same total loss
    # the tiny model's two tasks agree at every step here (the conflicting case: the test above), so PCGrad must
    # leave the sum of their gradients as it was: the same weights as without it
    assert all(0 < float(r["task_cos"]) <= 1 for r in rows) and "task_cos" not in plain_rows[0]
    a, b = safetensors_weights(plain), safetensors_weights(model)
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    with pytest.raises(train.ConfigError, match="'pcgrad' is for the grid methods; separate"):
        train.validate(config(tiny_bert, pairs_file, method="separate", pcgrad=True))


def test_layer_lr_decay_scales_each_layers_first_step_and_one_lr_keeps_two_groups(tiny_bert, pairs_file, tmp_path):
    # Adam's first step moves every weight by about lr (g / |g|): its largest move is its group's lr
    cfg = config(tiny_bert, pairs_file, max_steps=1, warmup_ratio=0.0, lr=1e-3, layer_lr_decay=0.5)
    start = safetensors_weights(tiny_bert)
    moved = safetensors_weights(train.train(cfg, tmp_path / "run"))
    rows = read_csv(tmp_path / "run" / "loss.csv")
    assert float(rows[0]["lr"]) == pytest.approx(1e-3)  # the peak lr is logged
    largest = {}
    for name, w in moved.items():
        group = next((f"layer{n + 1}" for n in range(3) if f"layer.{n}." in name), "embeddings")
        largest[group] = max(largest.get(group, 0.0), (w - start[name]).abs().max().item())
    # the 3-layer model: layer 3 at lr, layer 2 at lr / 2, layer 1 at lr / 4, the embeddings at lr / 8
    assert largest == pytest.approx({"layer3": 1e-3, "layer2": 5e-4, "layer1": 2.5e-4, "embeddings": 1.25e-4},
                                    rel=0.05)
    enc = backbone.load(str(tiny_bert))
    opt = train._optimizer(enc, train.validate(config(tiny_bert, pairs_file)))
    assert len(opt.param_groups) == 2  # as before the key existed: earlier checkpoints resume


def test_gradient_equilibrium_scales_each_layers_gradient_as_imta_does(tiny_bert_and_mpnet):
    # IMTA's rescale (1/(L-k+1) on layer k's output, (L-k) on the way into layer k+1): with a loss on the top exit
    # alone, layer n's gradient is 1/(L-n+1) of the plain one; with a loss on exit 1 alone, 1/L; forward unchanged
    enc = backbone.load(str(tiny_bert_and_mpnet))
    enc.model.eval()  # no dropout: the two backward passes see the same forward
    f = enc.tokenize(SENTENCES[:4])

    def layer_grads(exit_layer):
        enc.zero_grad()
        emb = enc(f["input_ids"], f["attention_mask"])
        exits = exit_layer if isinstance(exit_layer, tuple) else (exit_layer,)
        sum(emb[k - 1].pow(2).sum() for k in exits).backward()
        return emb.detach(), [torch.cat([p.grad.flatten() for p in layer.parameters() if p.grad is not None])
                              for layer in backbone.transformer_layers(enc.model)]

    plain = {k: layer_grads(k) for k in (1, 3, (1, 2, 3))}
    enc.equalize_gradients()
    # exit 1: no gradient above it; every exit at once: still one factor per layer, 1/(L - n + 1) (so under Adam,
    # which divides each gradient by its own scale, equilibrium changes next to nothing)
    for k, factors in ((3, [1 / 3, 1 / 2, 1.0]), (1, [1 / 3, 0.0, 0.0]), ((1, 2, 3), [1 / 3, 1 / 2, 1.0])):
        emb, grads = layer_grads(k)
        torch.testing.assert_close(emb, plain[k][0])
        for got, want, factor in zip(grads, plain[k][1], factors):
            torch.testing.assert_close(got, want * factor, rtol=1e-4, atol=1e-7)


def test_top_first_trains_like_baseline_then_like_the_method(tiny_bert, pairs_file, tmp_path):
    # the mixed regime: the first half of the steps is baseline's (same loss, same weights after them), the rest
    # supervises the method's cells; loss.csv keeps the method's columns throughout
    base = train.train(config(tiny_bert, pairs_file, method="baseline", max_steps=4, lr=1e-3), tmp_path / "base")
    mixed = train.train(config(tiny_bert, pairs_file, method="relational", max_steps=4, lr=1e-3, top_first=0.5),
                        tmp_path / "mixed")
    rows, base_rows = read_csv(mixed.parent / "loss.csv"), read_csv(base.parent / "loss.csv")
    cells = [float(r["cells"]) for r in rows]
    assert cells[:2] == [1.0, 1.0] and cells[2] == cells[3] > 1
    np.testing.assert_allclose([float(r["loss"]) for r in rows[:2]], [float(r["loss"]) for r in base_rows[:2]],
                               rtol=1e-5)
    assert all(r["distill"] != "" for r in rows)  # relational's own column, logged from the first step
    with pytest.raises(train.ConfigError, match="'top_first' is for the grid methods; separate"):
        train.validate(config(tiny_bert, pairs_file, method="separate", top_first=0.5))
    with pytest.raises(train.ConfigError, match="'gradient_equilibrium' is for the grid methods; st-matryoshka2d"):
        train.validate(config(tiny_bert, pairs_file, method="st-matryoshka2d", gradient_equilibrium=True))


def test_uncertainty_weights_weigh_each_cells_loss_and_are_learned(tiny_bert, pairs_file, tmp_path):
    # the loss: sum W (exp(-s) l + s) over the supervised cells; learned: the cells' weights move from 1, each
    # its own way, and are recorded in train_info.json; with top_first, the top-only steps keep baseline's loss
    objective = methods.build("full", num_layers=3, hidden_size=32, dims=[8, 16])
    objective.learn_weights("cpu")[0].data.copy_(torch.tensor([[0.5, 0.0, -1.0], [0.0, 0.2, 0.0], [1.0, 0.0, 0.3]]))
    W, cells = objective.cells(), torch.rand(3, 3)
    s = objective.log_vars.detach()
    want = sum(float(W[i, j]) * (np.exp(-float(s[i, j])) * float(cells[i, j]) + float(s[i, j]))
               for i in range(3) for j in range(3))
    assert float(objective.cell_terms(W, cells).sum().detach()) == pytest.approx(want, rel=1e-5)
    model = train.train(config(tiny_bert, pairs_file, method="full", uncertainty_weights=0.1, top_first=0.5),
                        tmp_path / "uw")
    plain = train.train(config(tiny_bert, pairs_file, method="full", top_first=0.5), tmp_path / "plain")
    learned = json.loads((model.parent / "train_info.json").read_text())["learned_cell_weights"]
    assert sorted(map(int, learned)) == [8, 16, 32] and all(len(v) == 3 for v in learned.values())
    weights = np.array(list(learned.values()))
    assert not np.allclose(weights, 1.0) and len(np.unique(weights.round(4))) > 3
    rows, plain_rows = read_csv(model.parent / "loss.csv"), read_csv(plain.parent / "loss.csv")
    np.testing.assert_allclose([float(r["loss"]) for r in rows[:2]], [float(r["loss"]) for r in plain_rows[:2]],
                               rtol=1e-5)
    assert float(rows[3]["loss"]) != pytest.approx(float(plain_rows[3]["loss"]), rel=1e-3)
    assert "learned_cell_weights" not in json.loads((plain.parent / "train_info.json").read_text())
    with pytest.raises(train.ConfigError, match="'uncertainty_weights' is for the grid methods; separate"):
        train.validate(config(tiny_bert, pairs_file, method="separate", uncertainty_weights=0.1))


def test_relational_trains_and_logs_its_distillation_term(tiny_bert, pairs_file, tmp_path):
    train.train(config(tiny_bert, pairs_file, method="relational", method_options={"distill_weight": 2.0}),
                tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "loss.csv")
    assert len(rows) == 4 and all(np.isfinite(float(r["distill"])) and float(r["distill"]) > 0 for r in rows)
    assert (tmp_path / "out" / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("method", ["full", "2dmse", "full+heads", "full+mlp", "full+uw", "2dmse@mpnet"])
def test_resume_after_sigkill_ends_at_the_same_weights(tiny_bert, pairs_file, tmp_path, method, request):
    # grad_accum 2 over 3 batches per epoch: optimizer steps straddle epochs; dropout makes RNG state matter.
    # 2dmse draws its (layer, width) per forward pass: the resumed run must draw the same ones.
    # +heads, +mlp: the exit heads (linear, mlp) are in the checkpoint too; +uw: the learned loss weights. @mpnet: on
    # all-mpnet-base-v2's architecture.
    method, arch = method.partition("@")[::2]
    method, extra = method.partition("+")[::2]
    heads = {"heads": True, "mlp": "mlp"}.get(extra, False)
    model = request.getfixturevalue("tiny_mpnet") if arch == "mpnet" else tiny_bert
    cfg = config(model, pairs_file, max_steps=8, save_every=3, grad_accum=2, method=method, exit_heads=heads,
                 uncertainty_weights=0.05 if extra == "uw" else 0.0)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    train.train(cfg, tmp_path / "whole")

    out = tmp_path / "killed"
    killed = run_cli(cfg_path, out, kill_at=5)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert torch.load(out / "checkpoint" / "state.pt", weights_only=True)["step"] == 3
    assert len(read_csv(out / "loss.csv")) == 5  # rows 4-5 were written after the checkpoint
    assert not (out / "model").exists()

    resumed = run_cli(cfg_path, out)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "at step 3" in resumed.stderr
    whole_rows, rows = read_csv(tmp_path / "whole" / "loss.csv"), read_csv(out / "loss.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    np.testing.assert_allclose([float(r["loss"]) for r in rows], [float(r["loss"]) for r in whole_rows], rtol=1e-5)
    a, b = safetensors_weights(tmp_path / "whole" / "model"), safetensors_weights(out / "model")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    if heads:
        from safetensors.torch import load_file
        a, b = (load_file(str(d / "model" / backbone.ExitHeads.FILE)) for d in (tmp_path / "whole", out))
        assert sorted(a) == sorted(b) and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
    info = json.loads((out / "train_info.json").read_text())
    assert info["resumed_from_step"] == 3
    if extra == "uw":
        assert info["learned_cell_weights"] == json.loads((tmp_path / "whole" / "train_info.json").read_text())[
            "learned_cell_weights"]
    if method == "2dmse":  # the logged layer is the mean of a step's two draws: .5 where they differed
        assert [r["layer"] for r in rows] == [r["layer"] for r in whole_rows]
        assert any(float(r["layer"]) % 1 for r in rows)


@pytest.mark.parametrize("method", ["full", "2dmse"])
def test_two_torchrun_processes_train_like_one_process_with_grad_accum_2(tiny_bert, pairs_file, tmp_path, method):
    # No dropout, so the only difference left is who computes which slice of each global batch.
    cfg_json = json.loads((tiny_bert / "config.json").read_text())
    cfg_json.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (tiny_bert / "config.json").write_text(json.dumps(cfg_json))
    # 20 pairs, 5 per process: each step takes the same 10 rows as one process with grad_accum 2 (3 epochs)
    # 2dmse: process r's pass m draws like pass m x 2 + r of one process, so the cells match too
    cfg = config(tiny_bert, pairs_file, batch_size=5, max_steps=6, save_every=4, method=method)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    train.train({**cfg, "grad_accum": 2}, tmp_path / "one")

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "twodmse.cli", "train", "--config", str(cfg_path), "--out", str(tmp_path / "two")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = read_csv(tmp_path / "one" / "loss.csv"), read_csv(tmp_path / "two" / "loss.csv")
    assert [r["step"] for r in two] == [str(i) for i in range(1, 7)]  # one writer: no duplicate rows
    np.testing.assert_allclose([float(r["loss"]) for r in two], [float(r["loss"]) for r in one], rtol=1e-4)
    a, b = safetensors_weights(tmp_path / "one" / "model"), safetensors_weights(tmp_path / "two" / "model")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)
    info = json.loads((tmp_path / "two" / "train_info.json").read_text())
    assert info["processes"] == 2 and info["steps"] == 6


# ------------------------------------------------------------------ divergence

def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tiny_bert, pairs_file, tmp_path, monkeypatch):
    from twodmse import methods
    real_build = methods.build

    def build_turning_nan(*args, **kwargs):
        objective = real_build(*args, **kwargs)

        def nan_from_step_3(forward, batch, step, draw=0):
            loss, logs = objective(forward, batch, step, draw)
            return (loss * float("nan") if step >= 3 else loss), logs
        return nan_from_step_3

    monkeypatch.setattr(methods, "build", build_turning_nan)
    out = tmp_path / "run"
    with pytest.raises(train.TrainingDiverged) as err:
        train.train(config(tiny_bert, pairs_file, max_steps=6, save_every=2), out)
    msg = str(err.value)
    assert "loss is nan at step 4" in msg and str(out / "checkpoint") in msg and "lower lr" in msg
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (out / "model").exists() and not (out / "train_info.json").exists()
    assert [int(r["step"]) for r in read_csv(out / "loss.csv")] == [1, 2, 3]


@pytest.mark.parametrize("key, value, message", [
    ("lr", 0.0, "'lr' must be a number > 0; got 0.0 (0 trains nothing"),
    ("lr", float("nan"), "'lr' must be a number > 0; got nan"),
    ("max_grad_norm", -1.0, "'max_grad_norm' must be a number > 0, or null; got -1.0 (clipping to a negative"),
    ("layer_lr_decay", -1.0, "'layer_lr_decay' must be a number > 0; got -1.0 (a negative factor reverses"),
    ("weight_decay", -1.0, "'weight_decay' must be a number >= 0; got -1.0 (a negative decay grows"),
    ("seed", 2 ** 33, "'seed' must be an integer >= 0 and < 4294967296; got 8589934592 (numpy's seeds are 32-bit)"),
    ("loss", {"cosine_tau": 0}, "loss: option cosine_tau must be a number > 0; got 0 (0 divides by zero"),
    ("loss", {"cosine_w": "x"}, "loss: option cosine_w must be a number >= 0; got 'x'"),
    ("loss", {"cosine_wt": 1.0}, "loss has no option 'cosine_wt' (did you mean 'cosine_w'?)"),
])
def test_values_that_train_nothing_or_backwards_are_refused_before_work(key, value, message):
    with pytest.raises(train.ConfigError) as err:
        train.validate({"method": "full", key: value})
    assert message in str(err.value)


@pytest.mark.parametrize("method, options, message", [
    ("2dmse", {"kl_weight": "x"}, "method 2dmse: option kl_weight must be a number >= 0; got 'x'"),
    ("2dmse", {"kl_temperature": 0}, "option kl_temperature must be a number > 0; got 0 (0 divides by zero"),
    ("full", {"dims": 16}, "option dims must be a non-empty list, each an integer >= 1, or null; got 16"),
    ("full", {"dims": [16.5]}, "option dims must be a non-empty list, each an integer >= 1, or null; got [16.5]"),
    ("full", {"layer_weights": "bogus"}, "option layer_weights must be one of uniform, linear, inverse or a"),
    ("2dmse", {"detach_teacher": "yes"}, "option detach_teacher must be true or false; got 'yes'"),
    ("full", {"foo": 1}, "method full has no option 'foo'; its options: dims, layer_weights, dim_weights"),
    ("st-matryoshka2d", {"bogus": 1}, "method st-matryoshka2d has no option 'bogus'"),
    ("st-matryoshka2d", {"kl_temperature": -1.0}, "option kl_temperature must be a number > 0; got -1.0"),
])
def test_method_options_of_the_wrong_kind_are_refused_before_work(method, options, message):
    with pytest.raises(train.ConfigError) as err:
        train.validate({"method": method, "method_options": options})
    assert message in str(err.value)


def declared_cases():
    """(config, key) for every bad value of every declared key: the train keys, the loss keys and each method's
    options (their declarations in twodmse.schema.Value), so a key added later is checked without a new test."""
    from twodmse import losses, methods
    for key, value in train.CONFIG.items():
        for bad in value.bad_values():
            yield {"method": "full", key: bad} if key != "method" else {"method": bad}, key
    for key, value in losses.KEYS.items():
        for bad in value.bad_values():
            yield {"method": "full", "loss": {key: bad}}, key
    for name in methods.names():
        for key, value in methods.options(name).items():
            for bad in value.bad_values():
                yield {"method": name, "method_options": {key: bad}}, key


def test_every_declared_key_refuses_each_of_its_bad_values_naming_the_key():
    cases = list(declared_cases())
    assert len(cases) > 100  # every key has at least one bad value
    for cfg, key in cases:
        if cfg.get("method") is None:
            continue  # a null method is asked for on the command line instead (tested above)
        with pytest.raises(train.ConfigError) as err:
            train.validate(cfg, "c.yaml")
        assert key in str(err.value), (cfg, str(err.value))
    for name in methods_names():
        assert train.validate({"method": name}, "c.yaml")["method"] == name  # and every default is valid


def methods_names():
    from twodmse import methods
    return methods.names()


def test_training_pairs_with_one_score_are_refused(tmp_path):
    from twodmse import data
    path = tmp_path / "same.jsonl"
    path.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": 3.0}) + "\n"
                            for a, b in zip(SENTENCES, SENTENCES[1:])))
    with pytest.raises(util.UserError, match=r"same.jsonl: every training pair of .* has the score 3, so there is "
                                             r"nothing to learn. Fix: give pairs with different scores"):
        data.load_train(str(path))


class RunsCode:
    """A pickle that runs a command when it is unpickled (what a swapped state.pt could hold)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("bad", ["code", "truncated", "empty", "other-model", "not-a-state"])
def test_a_bad_checkpoint_is_one_message_and_never_runs_code(tiny_bert, pairs_file, tmp_path, bad):
    out, marker = tmp_path / "run", tmp_path / "ran"
    cfg = config(tiny_bert, pairs_file, max_steps=2, save_every=2)
    state = out / "checkpoint" / "state.pt"  # what the next call resumes from
    state.parent.mkdir(parents=True)
    if bad == "code":
        torch.save({"config": RunsCode(marker)}, state)
    elif bad == "empty":
        state.write_bytes(b"")
    elif bad == "not-a-state":
        torch.save({"weights": torch.zeros(2)}, state)
    else:  # a real checkpoint of a model of another size (killed after its step-2 checkpoint), or its first 1000 bytes
        other = config(make_other_tiny(tmp_path), pairs_file, max_steps=4, save_every=2)
        (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
        assert run_cli(tmp_path / "other.yaml", tmp_path / "o", kill_at=3).returncode == -signal.SIGKILL
        theirs = torch.load(tmp_path / "o" / "checkpoint" / "state.pt", weights_only=True)
        torch.save({**theirs, "config": train.validate(cfg)}, state)
        if bad == "truncated":
            state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(util.UserError, match=r"state.pt cannot be resumed from .*Fix: start over with --no-resume"):
        train.train(cfg, out)
    assert not marker.exists()
    train.train(cfg, out, resume=False)  # and the way out works
    assert (out / "train_info.json").is_file()


def make_other_tiny(tmp_path):
    from twodmse.backbone import make_tiny
    return make_tiny(tmp_path / "other-bert", layers=3, hidden=48)


# ------------------------------------------------------------------ inference and the other methods

def test_load_elastic_drops_layers_and_equals_hidden_state_k(tiny_bert_and_mpnet):
    from transformers import AutoModel, AutoTokenizer
    elastic = inference.load_elastic(tiny_bert_and_mpnet, layers=2, dim=8)
    assert len(backbone.transformer_layers(elastic.encoder.model)) == 2
    got = elastic.encode(SENTENCES, batch_size=4)
    tok, full = AutoTokenizer.from_pretrained(tiny_bert_and_mpnet), AutoModel.from_pretrained(tiny_bert_and_mpnet).eval()
    f = tok(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = full(**f, output_hidden_states=True).hidden_states[2]  # [0] is the embedding layer
    m = f["attention_mask"].unsqueeze(-1).float()
    expected = ((hidden * m).sum(1) / m.sum(1))[:, :8].numpy()
    assert got.shape == (len(SENTENCES), 8)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    unit = inference.load_elastic(tiny_bert_and_mpnet, layers=2, dim=8, normalize=True).encode(SENTENCES)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("method", methods_names())
def test_every_method_trains_an_mpnet_whose_top_cell_sentence_transformers_reads(tiny_mpnet, pairs_file, method,
                                                                                   tmp_path):
    # all-mpnet-base-v2's architecture (pad id 1, a position bias shared by all layers), tiny: every method trains
    # on it unchanged, and its saved model at width 16 is what sentence-transformers' truncate_dim gives
    st = pytest.importorskip("sentence_transformers")
    out = train.train(config(tiny_mpnet, pairs_file, method=method, max_steps=2), tmp_path / method)
    folder = out / "model_layers3" if method == "separate" else out  # separate returns its run folder
    ours = inference.load_elastic(folder, dim=16).encode(SENTENCES)
    theirs = st.SentenceTransformer(str(folder), truncate_dim=16, device="cpu").encode(SENTENCES)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_separate_trains_one_truncated_model_per_depth(tiny_bert, pairs_file, tmp_path):
    out = tmp_path / "sep"
    assert train.train(config(tiny_bert, pairs_file, method="separate", max_steps=2), out) == out
    assert not (out / "model").exists()
    for k in (1, 2, 3):
        assert json.loads((out / f"model_layers{k}" / "config.json").read_text())["num_hidden_layers"] == k
        assert len(read_csv(out / f"loss_layers{k}.csv")) == 2
    assert sorted(json.loads((out / "train_info.json").read_text())["models"]) == ["1", "2", "3"]


def test_separate_trains_only_the_depths_it_is_given(tiny_bert, pairs_file, tmp_path):
    # method_options.depths: the published tables' rows only (configs/study-mpnet.yaml); depth 1 alone is trained
    # as in a run of every depth, and the full depth can still be copied from the baseline run
    every = train.train(config(tiny_bert, pairs_file, method="separate", max_steps=2), tmp_path / "every")
    base = train.train(config(tiny_bert, pairs_file, method="baseline", max_steps=2), tmp_path / "base")
    out = tmp_path / "some"
    train.train(config(tiny_bert, pairs_file, method="separate", max_steps=2,
                       method_options={"depths": [3, 1], "top_model": str(base)}), out)
    assert sorted(p.name for p in out.glob("model_layers*")) == ["model_layers1", "model_layers3"]
    assert sorted(json.loads((out / "train_info.json").read_text())["models"]) == ["1", "3"]
    assert json.loads((out / "train_info_layers3.json").read_text())["copied_from"] == str(base)
    a, b = safetensors_weights(every / "model_layers1"), safetensors_weights(out / "model_layers1")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)
    with pytest.raises(train.ConfigError, match=r"depths: depth\(s\) \[4\] beyond the model's 3 layers"):
        train.train(config(tiny_bert, pairs_file, method="separate", method_options={"depths": [2, 4]}),
                    tmp_path / "deep")
    with pytest.raises(train.ConfigError, match=r"per_depth: depth\(s\) \[2\] are not trained \(depths: \[1, 3\]\)"):
        train.train(config(tiny_bert, pairs_file, method="separate", method_options={
            "depths": [1, 3], "per_depth": {"2": {"lr": 1e-4}}}), tmp_path / "other")
    assert not (tmp_path / "deep").exists() or not list((tmp_path / "deep").glob("model_layers*"))


def test_bf16_true_autocasts_on_cpu_and_is_recorded(tiny_bert, pairs_file, tmp_path):
    # bf16 is a lever on CPUs with bf16 units: asked for, it is used (the losses differ from fp32's), and the
    # run's record says which it was
    losses = {}
    for bf16 in (False, True, None):  # None: on with CUDA only, so off here
        out = train.train(config(tiny_bert, pairs_file, method="2dmse", max_steps=3, bf16=bf16), tmp_path / str(bf16))
        losses[bf16] = [float(r["loss"]) for r in read_csv(out.parent / "loss.csv")]
        info = json.loads((out.parent / "train_info.json").read_text())
        assert info["config"]["bf16"] is bf16 and info["bf16_autocast"] is bool(bf16)
    assert losses[None] == losses[False]
    assert np.isfinite(losses[True]).all() and losses[True] != losses[False]
    np.testing.assert_allclose(losses[True], losses[False], rtol=0.05)  # bf16 rounding, not another run


def test_separate_top_depth_is_the_baseline_run_so_it_can_be_copied(tiny_bert, pairs_file, tmp_path):
    base = train.train(config(tiny_bert, pairs_file, method="baseline", max_steps=2), tmp_path / "base")
    trained = tmp_path / "sep"
    train.train(config(tiny_bert, pairs_file, method="separate", max_steps=2), trained)
    a, b = safetensors_weights(base), safetensors_weights(trained / "model_layers3")
    for name in a:  # training the full depth again gives the baseline's weights exactly
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)

    copied = tmp_path / "sep-copied"
    train.train(config(tiny_bert, pairs_file, method="separate", max_steps=2,
                       method_options={"top_model": str(base)}), copied)
    assert safetensors_weights(copied / "model_layers3").keys() == a.keys()
    assert json.loads((copied / "train_info_layers3.json").read_text())["copied_from"] == str(base)
    assert not (copied / "loss_layers3.csv").exists() and (copied / "loss_layers2.csv").exists()
    with pytest.raises(train.ConfigError, match="differs in: lr"):
        train.train(config(tiny_bert, pairs_file, method="separate", max_steps=2, lr=1e-4,
                           method_options={"top_model": str(base)}), tmp_path / "sep-other")


def test_separate_trains_each_depth_with_its_own_values(tiny_bert, pairs_file, tmp_path):
    # per_depth (what a sweep that picks each depth on its own cell hands on): depth 1 at its own lr, with its
    # depth-1 model the same as a separate run at that lr; the other depths keep the run's lr
    out = tmp_path / "sep"
    train.train(config(tiny_bert, pairs_file, method="separate", max_steps=2, lr=1e-4,
                       method_options={"per_depth": {"1": {"lr": 5e-4}}}), out)
    infos = {k: json.loads((out / f"train_info_layers{k}.json").read_text())["config"] for k in (1, 2, 3)}
    assert [infos[k]["lr"] for k in (1, 2, 3)] == [5e-4, 1e-4, 1e-4]
    alone = tmp_path / "sep-5e-4"
    train.train(config(tiny_bert, pairs_file, method="separate", max_steps=2, lr=5e-4), alone)
    a, b = safetensors_weights(alone / "model_layers1"), safetensors_weights(out / "model_layers1")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)


@pytest.mark.parametrize("per_depth, message", [
    ({"0": {"lr": 1e-4}}, r"per_depth.0: a depth \(1, 2, ...\)"),
    ({"1": {"seed": 3}}, r"per_depth.1: \['seed'\] belong to the whole run"),
    ({"1": {"lrr": 1e-4}}, r"per_depth.1: unknown key 'lrr' \(did you mean 'lr'\?\)"),
    ({"1": {"batch_size": 0}}, r"per_depth.1: 'batch_size' must be an integer >= 1"),
    ([1], r"option per_depth must be a mapping, or null; got \[1\]"),
])
def test_separate_per_depth_values_are_checked_before_training(tiny_bert, pairs_file, per_depth, message):
    with pytest.raises(train.ConfigError, match=message):
        train.validate(config(tiny_bert, pairs_file, method="separate", method_options={"per_depth": per_depth}))


def test_st_matryoshka2d_trains_and_saves_sentence_transformers_format(tiny_bert, pairs_file, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    out = tmp_path / "st"
    model_dir = train.train(config(tiny_bert, pairs_file, method="st-matryoshka2d", max_steps=3), out)
    assert [int(r["step"]) for r in read_csv(out / "loss.csv")] == [1, 2, 3]
    assert st.SentenceTransformer(str(model_dir), truncate_dim=8, device="cpu").encode(SENTENCES).shape == (10, 8)
    assert not (out / "st_trainer").exists()


def test_st_matryoshka2d_without_sentence_transformers_exits_with_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    path = tmp_path / "c.yaml"
    path.write_text("method: st-matryoshka2d\n")
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "pip install" in capsys.readouterr().err


def test_separate_with_a_missing_top_model_stops_before_any_depth_trains(tiny_bert, pairs_file, tmp_path):
    out = tmp_path / "sep"
    with pytest.raises(train.ConfigError, match="top_model: .*train_info.json not found; train that baseline run"):
        train.train(config(tiny_bert, pairs_file, method="separate", max_steps=2,
                           method_options={"top_model": str(tmp_path / "nowhere" / "model")}), out)
    assert not list(out.glob("model_layers*")) and not list(out.glob("loss_layers*"))
