"""The vectorized grid loss against a slow per-cell reference, and which cells each method supervises."""
import math

import pytest
import torch
import torch.nn.functional as F

from twodmse import losses, methods
from twodmse.util import UserError

L, B, H = 3, 6, 16
DIMS = [16, 8, 4, 2]


# ---- slow reference: AnglE's functions on zigzag rows [x0, y0, x1, y1, ...], one cell at a time ----

def _rank(s, y):
    mask = (y[:, None] < y[None, :]).float()
    d = (s[:, None] - s[None, :] - (1 - mask) * 1e12).view(-1)
    return torch.logsumexp(torch.cat([torch.zeros(1), d]), 0)


def ref_cosine(y, zz, tau):
    o = F.normalize(zz, dim=1)
    return _rank((o[::2] * o[1::2]).sum(1) * tau, y)


def ref_angle(y, zz, tau):
    re, im = zz.chunk(2, dim=1)
    a, b, c, d = re[::2], im[::2], re[1::2], im[1::2]
    z = (c ** 2 + d ** 2).sum(1, keepdim=True)
    scale = (a ** 2 + b ** 2).sum(1, keepdim=True) ** 0.5 / (c ** 2 + d ** 2).sum(1, keepdim=True) ** 0.5
    re_, im_ = (a * c + b * d) / z / scale, (b * c - a * d) / z / scale
    return _rank(torch.cat([re_, im_], 1).sum(1).abs() * tau, y)


def ref_ibn_pairs(y, zz, tau):
    n = zz.shape[0]
    o = F.normalize(zz, dim=1)
    sim = (o @ o.T - torch.eye(n) * 1e12) * tau
    target = torch.zeros(n, n)
    for i in range(n):
        if int(y[i // 2]) != 0:
            target[i, i ^ 1] = 1
    return -(F.log_softmax(sim, 1) * target).sum(1).mean()


def ref_ibn_triplets(t, p, ng, tau):
    q, c = F.normalize(t, dim=1), F.normalize(torch.cat([p, ng]), dim=1)
    return F.cross_entropy(q @ c.T * tau, torch.arange(len(t)))


def zigzag(u, v):
    return torch.stack([u, v], 1).reshape(-1, u.shape[-1])


def ref_cell(x, k, labels, cfg):
    """AnglE's AngleLoss on one cell's rows x [kB, d]."""
    a, b = x[:B], x[B:2 * B]
    if k == 2:
        zz, y = zigzag(a, b), labels
    else:
        neg = x[2 * B:]
        zz, y = torch.cat([zigzag(a, b), zigzag(a, neg)]), torch.cat([torch.ones(B), torch.zeros(B)])
    out = torch.tensor(0.0)
    if cfg["cosine_w"]:
        out = out + cfg["cosine_w"] * ref_cosine(y, zz, cfg["cosine_tau"])
    if cfg["ibn_w"]:
        out = out + cfg["ibn_w"] * (ref_ibn_pairs(y, zz, cfg["ibn_tau"]) if k == 2
                                    else ref_ibn_triplets(a, b, neg, cfg["ibn_tau"]))
    if cfg["angle_w"]:
        out = out + cfg["angle_w"] * ref_angle(y, zz, cfg["angle_tau"])
    return out


def ref_grid(emb, k, labels, cfg, dims=DIMS):
    return torch.stack([torch.stack([ref_cell(emb[l, :, :d], k, labels, cfg) for d in dims])
                        for l in range(emb.shape[0])])


def make_batch(k, seed=0, layers=L, hidden=H):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(layers, k * B, hidden, generator=g)
    labels = torch.tensor([0.0, 0.4, 1.0, 2.5, 3.0, 5.0]) if k == 2 else None  # ties at int() = 0
    batch = {"input_ids": torch.zeros(k * B, 4, dtype=torch.long),
             "attention_mask": torch.ones(k * B, 4, dtype=torch.long), "labels": labels, "k": k}
    return emb, labels, batch


LOSS_CFGS = {"cosent": dict(cosine_w=1, ibn_w=0, angle_w=0), "ibn": dict(cosine_w=0, ibn_w=1, angle_w=0),
             "angle": dict(cosine_w=0, ibn_w=0, angle_w=1), "all": dict(cosine_w=1, ibn_w=0.5, angle_w=2.0)}


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", sorted(LOSS_CFGS))
def test_cell_losses_match_per_cell_reference(k, name):
    emb, labels, _ = make_batch(k)
    cfg = losses.config(LOSS_CFGS[name], k)
    fast = losses.cell_losses(emb, k, labels, torch.tensor(DIMS), cfg)
    torch.testing.assert_close(fast, ref_grid(emb, k, labels, cfg), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [2, 3])
def test_grid_loss_is_weighted_sum_of_reference_cells(k):
    emb, labels, _ = make_batch(k, seed=1)
    cfg = losses.config(LOSS_CFGS["all"], k)
    W = torch.zeros(L, len(DIMS))
    W[0, 3], W[2, 0], W[2, 1], W[1, 2] = 0.5, 1.0, 2.0, 0.25
    loss, _ = losses.grid_loss(emb, k, labels, W, DIMS, cfg)
    torch.testing.assert_close(loss, (W * ref_grid(emb, k, labels, cfg)).sum(), rtol=1e-4, atol=1e-4)


def test_similarity_matrix_per_cell():
    x, y = torch.randn(2, 5, H), torch.randn(2, 7, H)
    sims = losses.cell_similarities(x, y, torch.tensor(DIMS))
    for j, d in enumerate(DIMS):
        ref = F.normalize(x[..., :d], dim=-1) @ F.normalize(y[..., :d], dim=-1).transpose(1, 2)
        torch.testing.assert_close(sims[:, j], ref, rtol=1e-5, atol=1e-5)


def test_kl_matches_torch_kl_div_per_width():
    s, t = torch.randn(3, 5, H), torch.randn(3, 5, H)
    widths = torch.tensor([4, 16, 8])
    got = losses.kl_div(s, t, widths, temperature=2.0)
    for i, d in enumerate(widths.tolist()):
        ref = F.kl_div(F.log_softmax(s[i, :, :d] / 2, -1), F.softmax(t[i, :, :d] / 2, -1), reduction="batchmean")
        torch.testing.assert_close(got[i], ref, rtol=1e-5, atol=1e-6)


# ---- methods: which cells get a gradient ----

def run(method, k=2, step=0, seed=0, **opts):
    emb, _, batch = make_batch(k, seed=seed, layers=4, hidden=32)
    emb.requires_grad_(True)
    obj = methods.build(method, 4, 32, **opts)
    loss, logs = obj(lambda ids, mask: emb, batch, step)
    loss.backward()
    return obj, emb, loss, logs


def support(grad):
    """Per layer: how wide a prefix of the hidden axis got any gradient (0 = none)."""
    nz = grad.abs().sum(1) > 0                                      # [L, H]
    return [int(row.nonzero().max()) + 1 if row.any() else 0 for row in nz]


# How wide a prefix of each layer (1..4) a step's gradient reaches, written out by hand for a 4 x 32 model
# (training widths 32, 16, 8), so a wrong cells() cannot pass by agreeing with itself.
EXPECTED_SUPPORT = {"baseline": [0, 0, 0, 32], "mrl": [0, 0, 0, 32], "full": [32, 32, 32, 32],
                    "starbucks": [8, 0, 16, 32], "relational": [32, 32, 32, 32]}  # the diagonal (1, 8) (3, 16) (4, 32)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("method,opts", [("baseline", {}), ("mrl", {}), ("full", {}),
                                         ("starbucks", {}), ("starbucks", {"kl_weight": 0}), ("relational", {}),
                                         ("2dmse", {"kl_weight": 0}), ("2dmse", {})])
def test_gradient_reaches_exactly_the_supervised_cells(method, opts, k):
    for step in (0, 1, 2):
        obj, emb, loss, _ = run(method, k, step, **opts)
        assert torch.isfinite(loss)
        if method == "2dmse":  # layer n at full width (and width d) and layer 4, for the (n, d) drawn this step
            n, _ = obj.sample(step)
            want = [32 if layer in (n, 4) else 0 for layer in range(1, 5)]
        else:
            want = EXPECTED_SUPPORT[method]
        assert support(emb.grad) == want, (method, step)


def test_cell_patterns():
    assert methods.build("baseline", 4, 32).cells().nonzero().tolist() == [[3, 0]]
    assert methods.build("mrl", 4, 32).cells().nonzero().tolist() == [[3, j] for j in range(3)]
    sb = methods.build("starbucks", 6, 384)
    assert [(n + 1, sb.dims[j]) for n, j in sb.cells().nonzero().tolist()] == \
        [(1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384)]
    sb = methods.build("starbucks", 12, 768)
    assert [(n + 1, sb.dims[j]) for n, j in sb.cells().nonzero().tolist()] == \
        [(2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768)]
    full = methods.build("full", 4, 32).cells()
    assert (full > 0).all() and math.isclose(full.sum().item(), 2.0, rel_tol=1e-6)
    assert math.isclose(full[3, 0].item(), 1 + 1 / 12, rel_tol=1e-6)
    lin = methods.build("full", 4, 32, layer_weights="linear", anchor_weight=0).cells()
    torch.testing.assert_close(lin.sum(1), torch.tensor([1, 2, 3, 4.0]) / 10)
    assert methods.build("2dmse", 6, 384).dims == [384, 256, 128, 64, 32, 16, 8]


def test_2dmse_sampling_is_deterministic_per_seed_and_step():
    a, b = methods.build("2dmse", 6, 384, seed=7), methods.build("2dmse", 6, 384, seed=7)
    draws = [a.sample(s) for s in range(40)]
    assert draws == [b.sample(s) for s in range(40)]
    assert all(torch.equal(a.cells(s), b.cells(s)) for s in range(5))
    assert len(set(draws)) > 5
    assert all(1 <= n <= 5 and d in (8, 16, 32, 64, 128, 256) for n, d in draws)
    assert draws != [methods.build("2dmse", 6, 384, seed=8).sample(s) for s in range(40)]
    n, d = a.sample(3)
    W = a.cells(3)
    assert W.nonzero().tolist() == sorted([[n - 1, 0], [n - 1, a.dims.index(d)], [5, 0], [5, a.dims.index(d)]])
    assert W[n - 1, 0].item() == pytest.approx(1 / n) and W[5, 0].item() == 1


def test_2dmse_draws_anew_on_every_forward_pass_of_a_step():
    obj = methods.build("2dmse", 6, 384, seed=7)
    per_pass = [[obj.sample(s, draw) for draw in range(4)] for s in range(20)]
    assert [p[0] for p in per_pass] == [obj.sample(s) for s in range(20)]  # pass 0: one draw per step, as before
    assert sum(len(set(p)) > 1 for p in per_pass) >= 15  # the passes of a step mostly differ
    assert per_pass == [[methods.build("2dmse", 6, 384, seed=7).sample(s, d) for d in range(4)] for s in range(20)]
    n, d = obj.sample(3, 2)
    assert obj.cells(3, 2)[n - 1, obj.dims.index(d)].item() == pytest.approx(1 / n)


def base_cell(emb, layer, width, labels):
    return ref_cell(emb[layer - 1, :, :width], 2, labels, losses.config({}, 2))


def test_2dmse_loss_is_the_official_formula():
    obj, emb, loss, logs = run("2dmse", step=5)
    n, d = logs["layer"], logs["dim"]
    e, labels = emb.detach(), make_batch(2)[1]
    kl = F.kl_div(F.log_softmax(e[n - 1], -1), F.softmax(e[3], -1), reduction="batchmean")
    want = (base_cell(e, 4, 32, labels) + base_cell(e, n, 32, labels) / n + base_cell(e, 4, d, labels)
            + base_cell(e, n, d, labels) / n + kl * math.log(2 + n))
    torch.testing.assert_close(loss.detach(), want, rtol=1e-4, atol=1e-4)


def test_2dmse_v1_uses_two_forwards_without_layer_scaling():
    e1, labels, batch = make_batch(2, seed=2, layers=4, hidden=32)
    e2 = make_batch(2, seed=3, layers=4, hidden=32)[0]
    outputs = [e1, e2]

    def forward(ids, mask):  # a fresh "dropout sample" per call
        return outputs.pop(0)

    obj = methods.build("2dmse", 4, 32, variant="v1", kl_temperature=2.0)
    loss, logs = obj(forward, batch, 4)
    n, d = logs["layer"], logs["dim"]
    kl = F.kl_div(F.log_softmax(e2[n - 1] / 2, -1), F.softmax(e1[3] / 2, -1), reduction="batchmean")
    want = (base_cell(e1, 4, 32, labels) + base_cell(e1, 4, d, labels) + base_cell(e2, n, 32, labels)
            + base_cell(e2, n, d, labels) + kl * 4)
    assert outputs == []
    torch.testing.assert_close(loss, want, rtol=1e-4, atol=1e-4)


def test_detach_teacher_stops_kl_gradient_into_last_layer():
    g_plain = run("2dmse", step=1)[1].grad[3]
    g_detached = run("2dmse", step=1, detach_teacher=True)[1].grad[3]
    g_no_kl = run("2dmse", step=1, kl_weight=0)[1].grad[3]
    torch.testing.assert_close(g_detached, g_no_kl)
    assert not torch.allclose(g_plain, g_no_kl)


def test_starbucks_loss_is_cells_plus_truncated_kl():
    obj, emb, loss, _ = run("starbucks")
    e, labels = emb.detach(), make_batch(2)[1]
    cells = [(1, 8), (3, 16), (4, 32)]
    assert [(n + 1, obj.dims[j]) for n, j in obj.cells().nonzero().tolist()] == cells
    want = sum(base_cell(e, n, d, labels) for n, d in cells)
    want = want + 0.3 * sum(F.kl_div(F.log_softmax(e[n - 1, :, :d], -1), F.softmax(e[3, :, :d], -1),
                                     reduction="batchmean") for n, d in cells[:-1])
    torch.testing.assert_close(loss.detach(), want, rtol=1e-4, atol=1e-4)


def ref_relational(e, dims, T=0.05):
    """Mean over the cells below the top of KL(top's || cell's) softmax over j != i of cos(x_i, x_j) / T."""
    def log_p(x):
        n = len(x)
        s = F.normalize(x, dim=-1) @ F.normalize(x, dim=-1).T / T
        return F.log_softmax(s[~torch.eye(n, dtype=torch.bool)].view(n, n - 1), -1)
    top = log_p(e[-1])
    kls = [F.kl_div(log_p(e[n, :, :d]), top, log_target=True, reduction="batchmean")
           for n in range(len(e)) for d in dims if (n, d) != (len(e) - 1, e.shape[-1])]
    return sum(kls) / len(kls)


@pytest.mark.parametrize("k", [2, 3])
def test_relational_loss_is_full_plus_in_batch_similarity_distillation(k):
    _, emb, plain, _ = run("full", k)
    obj, _, loss, logs = run("relational", k, distill_weight=2.0)
    assert obj.dims == [32, 16, 8]
    want = plain.detach() + 2.0 * ref_relational(emb.detach(), obj.dims)
    torch.testing.assert_close(loss.detach(), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logs["distill"], ref_relational(emb.detach(), obj.dims), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(run("relational", k, distill_weight=0)[2], plain)


def test_relational_teacher_is_detached_by_default():
    top = {detach: run("relational", detach_teacher=detach)[1].grad[3] for detach in (True, False)}
    g_full = run("full")[1].grad[3]
    # detached: the top layer's gradient beyond width 16 comes from its own cells only, as under full
    torch.testing.assert_close(top[True][:, 16:], g_full[:, 16:])
    assert not torch.allclose(top[False][:, 16:], g_full[:, 16:])


def test_nan_guard():
    emb, labels, batch = make_batch(2, layers=4, hidden=32)
    emb[0] = float("nan")  # an unsupervised layer
    emb[3, 0] = 0.0        # a zero embedding in the supervised one
    emb.requires_grad_(True)
    loss, _ = methods.build("baseline", 4, 32)(lambda i, m: emb, batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all() and emb.grad[0].abs().sum() == 0
    # a NaN inside a computed but unweighted cell (layer 1 beyond width 8) must not reach the loss value
    emb = make_batch(2, layers=4, hidden=32)[0]
    emb[0, :, 8:] = float("nan")
    obj = methods.build("starbucks", 4, 32, kl_weight=0)
    loss, _ = losses.grid_loss(emb, 2, labels, obj.cells(), obj.dims, losses.config({}, 2))
    assert torch.isfinite(loss)


def test_bad_input_gives_clear_errors():
    with pytest.raises(UserError, match="unknown method '2d': choose from baseline"):
        methods.build("2d", 4, 32)
    with pytest.raises(ValueError, match="no option"):
        methods.build("baseline", 4, 32, kl_weight=1)
    with pytest.raises(ValueError, match=r"loss has no option .cosine_weight. \(did you mean .cosine_w.\?\)"):
        methods.build("full", 4, 32, loss_cfg={"cosine_weight": 1})
    with pytest.raises(ValueError, match="odd width"):
        methods.build("mrl", 4, 30, loss_cfg={"angle_w": 1}, dims=[30, 15])
    emb, _, batch = make_batch(2, layers=4, hidden=32)
    with pytest.raises(ValueError, match="forward must return"):
        methods.build("baseline", 4, 32)(lambda i, m: emb[:, :, :16], batch, 0)
    with pytest.raises(ValueError, match="k=2 with labels"):
        methods.build("baseline", 4, 32)(lambda i, m: emb, {**batch, "labels": None}, 0)


def test_real_encoder_end_to_end(tiny_bert):
    from twodmse import backbone
    enc = backbone.load(str(tiny_bert)).train()
    feats = enc.tokenize(["a man is playing guitar", "a dog is running", "two people sitting",
                          "a man plays the guitar", "the dog runs", "a child eating food"])
    batch = {"input_ids": feats["input_ids"], "attention_mask": feats["attention_mask"],
             "labels": torch.tensor([4.5, 3.0, 0.5]), "k": 2}
    for method in ("baseline", "full"):
        enc.zero_grad()
        loss, _ = methods.build(method, enc.num_layers, enc.hidden_size)(enc, batch, 0)
        loss.backward()
        first = backbone.transformer_layers(enc.model)[0]
        assert torch.isfinite(loss) and all(p.grad is not None for p in first.parameters())
