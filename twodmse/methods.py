"""Training methods: which (layer, width) cells of the grid a step supervises, how they are sampled, and
which layers are aligned to the last one.

    objective = build("full", num_layers=6, hidden_size=384)
    loss, logs = objective(encoder, batch, step)   # batch format: see Objective.__call__
    objective.cells(step)                          # W [L, D]: the weight of each cell (0 = unsupervised)
    objective.dims                                 # the widths of W's columns, largest first

Every method is one weight matrix W over (layer 1..L) x (width in dims); the loss is sum(W * cell_loss),
computed for all cells in one pass by losses.grid_loss. Layer n means the output of transformer block n.
  baseline   (L, full) only.
  mrl        (L, d) for every training width d, weight 1 each (sentence-transformers MatryoshkaLoss).
  2dmse      AnglE's AngleTDMSETrainer.compute_loss: sample layer n in 1..L-1 and width d in {8, 16, 32, ..}
             below the hidden size, then  A(L,full) + A(n,full)/n + A(L,d) + A(n,d)/n
             + KL(softmax(emb_L / T) || softmax(emb_n / T)) * T * ln(2+n)   (full width, T = 1).
             Checked against the angle-emb 0.3.10 wheel, which has the 1/n but KL * T only; the ln(2+n)
             factor is the commit-347bbb6 recipe this suite targets (kl_log_scale=False gives 0.3.10).
             variant="v1" (commit 74e5ba29 = angle-emb 0.3.5): the teacher and the student come from two
             separate forward passes, no 1/n, and KL * T^2. The teacher is not detached in either
             (sentence-transformers issue 3757 argues it should be: detach_teacher=True).
  starbucks  a fixed diagonal, every step, weight 1 each, plus KL(layer L || layer n) on each off-last cell
             truncated to its width, times 0.3 (ielab/Starbucks sts/starbucks_loss.py: kl_temperature 0.3).
             Rule: the K = min(L, len(dims)) largest widths, ascending, paired with layers round(L*i/K),
             i = 1..K. 6 x 384 -> (1,12) (2,24) (3,48) (4,96) (5,192) (6,384); for 12 x 768 the paper's
             widths 32..768 are the default, giving (2,32) (4,64) ... (12,768).
  full       every layer x every training width, every step. Weights outer(layer_w, dim_w) normalised to
             sum 1 (a mean over cells by default), plus anchor_weight (1) on (L, full) so the top cell
             gets at least the push it gets under baseline. layer_weights / dim_weights: "uniform",
             "linear" (n, d), "inverse" (1/n, 1/d), or a list (layers 1..L; widths in .dims order).
Training widths default to backbone.default_dims(hidden) (halvings down to 8); pass dims=[...] to change
them. The full width is always included.
Sampling is seeded by (seed, step) on the host: deterministic, resumable, and no device sync.
"""
import math
import random

import torch

from . import losses
from .backbone import default_dims

METHODS = ("baseline", "mrl", "2dmse", "starbucks", "full")
OPTIONS = {"baseline": {"dims"}, "mrl": {"dims"},
           "2dmse": {"variant", "detach_teacher", "kl_weight", "kl_temperature", "kl_log_scale"},
           "starbucks": {"dims", "kl_weight", "detach_teacher"},
           "full": {"dims", "layer_weights", "dim_weights", "anchor_weight"}}
WEIGHTINGS = {"uniform": lambda v: 1.0, "linear": lambda v: float(v), "inverse": lambda v: 1.0 / v}
STARBUCKS_12x768 = [32, 64, 128, 256, 512, 768]
STARBUCKS_KL = 0.3


def powers_of_two_below(hidden, base=8):
    """AnglE's get_geometric_hidden_sizes: 8, 16, 32, ... while < hidden."""
    out, d = [], base
    while d < hidden:
        out.append(d)
        d *= 2
    return out


def starbucks_cells(num_layers, dims):
    widths = sorted(dims)[-min(num_layers, len(dims)):]
    K = len(widths)
    return [(math.floor(num_layers * i / K + 0.5), d) for i, d in zip(range(1, K + 1), widths)]


def _weights(spec, values, what):
    if isinstance(spec, str):
        if spec not in WEIGHTINGS:
            raise ValueError(f"unknown {what} '{spec}': choose from {sorted(WEIGHTINGS)} or give a list")
        return torch.tensor([WEIGHTINGS[spec](v) for v in values], dtype=torch.float64)
    if len(spec) != len(values):
        raise ValueError(f"{what} has {len(spec)} entries but there are {len(values)}: {values}")
    return torch.tensor(spec, dtype=torch.float64)


class Objective:
    def __init__(self, method, num_layers, hidden_size, loss_cfg=None, seed=42, **opts):
        if method not in METHODS:
            raise ValueError(f"unknown method '{method}': choose from {', '.join(METHODS)}")
        bad = set(opts) - OPTIONS[method]
        if bad:
            raise ValueError(f"method '{method}' has no option(s) {sorted(bad)}; it takes {sorted(OPTIONS[method])}")
        self.method, self.L, self.H, self.seed, self.opts = method, num_layers, hidden_size, seed, opts
        self.loss_cfg = dict(loss_cfg or {})
        losses.config(self.loss_cfg, 2)  # fail now on a misspelt key, not at step 1
        if method == "2dmse":
            if num_layers < 2 or hidden_size <= 8:
                raise ValueError(f"2dmse needs >= 2 layers and hidden > 8, got {num_layers} x {hidden_size}")
            if opts.get("variant", "v2") not in ("v1", "v2"):
                raise ValueError(f"2dmse variant must be 'v1' (two forwards) or 'v2', got {opts['variant']!r}")
            self.sizes = powers_of_two_below(hidden_size)
            dims = [hidden_size] + self.sizes[::-1]
        else:
            default = STARBUCKS_12x768 if (method, num_layers, hidden_size) == ("starbucks", 12, 768) else None
            dims = opts.get("dims") or default or default_dims(hidden_size)
            if not all(0 < d <= hidden_size for d in dims):
                raise ValueError(f"dims must lie in 1..{hidden_size}, got {dims}")
            dims = sorted(set(dims) | {hidden_size}, reverse=True)
        if self.loss_cfg.get("angle_w") and any(d % 2 for d in dims):
            raise ValueError(f"the angle loss splits each width into halves; odd width in {dims}")
        self.dims = dims
        self.col = {d: j for j, d in enumerate(dims)}
        self.diagonal = starbucks_cells(num_layers, dims) if method == "starbucks" else []

    def sample(self, step):
        """2dmse's (layer n, width d) for this step, from a generator seeded by (seed, step)."""
        rng = random.Random(f"2dmse:{self.seed}:{step}")
        n = rng.randint(1, self.L - 1)  # AnglE samples the layer first, then the width
        return n, rng.choice(self.sizes)

    def cells(self, step=0):
        """W [L, len(dims)] float32: the weight of each (layer, width) cell at this step, 0 = unsupervised."""
        L, W = self.L, torch.zeros(self.L, len(self.dims), dtype=torch.float64)
        full = self.col[self.H]
        if self.method == "baseline":
            W[L - 1, full] = 1
        elif self.method == "mrl":
            W[L - 1, :] = 1
        elif self.method == "2dmse":
            n, d = self.sample(step)
            v1 = self.opts.get("variant") == "v1"
            for j in (full, self.col[d]):
                W[L - 1, j] = 1
                W[n - 1, j] = 1 if v1 else 1 / n
        elif self.method == "starbucks":
            for n, d in self.diagonal:
                W[n - 1, self.col[d]] = 1
        else:
            lw = _weights(self.opts.get("layer_weights", "uniform"), range(1, L + 1), "layer_weights")
            dw = _weights(self.opts.get("dim_weights", "uniform"), self.dims, "dim_weights")
            W = torch.outer(lw, dw)
            W = W / W.sum()
            W[L - 1, full] += self.opts.get("anchor_weight", 1.0)
        return W.float()

    def __call__(self, forward, batch, step):
        """forward(input_ids, attention_mask) -> [L, kB, H]; batch = {"input_ids", "attention_mask" [kB, T]
        (rows: B first sentences, B second, B hard negatives if k == 3), "labels": [B] gold scores or None
        for triplets, "k": 2 or 3}. Returns (loss, logs); log values are floats or 0-dim tensors."""
        ids, mask, k, labels = batch["input_ids"], batch["attention_mask"], batch["k"], batch.get("labels")
        if k not in (2, 3) or ids.shape[0] % k or (labels is None) != (k == 3):
            raise ValueError(f"batch needs k=2 with labels or k=3 without, and k | rows; got k={k}, "
                             f"rows={ids.shape[0]}, labels={'None' if labels is None else 'given'}")
        cfg = losses.config(self.loss_cfg, k)
        W = self.cells(step)
        logs = {"cells": float((W != 0).sum())}
        kl_w = self.opts.get("kl_weight", 1.0)
        if self.method == "2dmse":
            n, d = self.sample(step)
            T = self.opts.get("kl_temperature", 1.0)
            logs.update(layer=n, dim=d)
            if self.opts.get("variant") == "v1":
                # 74e5ba29 ran the model once for the teacher (layer L) and once more for the student (layer n)
                emb, student = self._forward(forward, ids, mask), self._forward(forward, ids, mask)
                W_teacher = torch.zeros_like(W)
                W_teacher[-1] = W[-1]
                loss = (losses.grid_loss(emb, k, labels, W_teacher, self.dims, cfg)[0]
                        + losses.grid_loss(student, k, labels, W - W_teacher, self.dims, cfg)[0])
                kl_scale = T ** 2
            else:
                emb = student = self._forward(forward, ids, mask)
                loss = losses.grid_loss(emb, k, labels, W, self.dims, cfg)[0]
                kl_scale = T * (math.log(2 + n) if self.opts.get("kl_log_scale", True) else 1.0)
            if kl_w:
                kl = losses.kl_div(student[n - 1][None], self._teacher(emb)[None], temperature=T)[0]
                loss = loss + kl_w * kl_scale * kl
                logs["kl"] = kl.detach()
            return loss, logs
        emb = self._forward(forward, ids, mask)
        loss = losses.grid_loss(emb, k, labels, W, self.dims, cfg)[0]
        aligned = [(n, d) for n, d in self.diagonal if n < self.L]  # starbucks' cells below the top
        if kl_w and aligned:
            student = torch.stack([emb[n - 1] for n, _ in aligned])
            widths = losses.to_device(torch.tensor([d for _, d in aligned]), emb.device)
            kl = losses.kl_div(student, self._teacher(emb).expand_as(student), widths).sum()
            loss = loss + kl_w * STARBUCKS_KL * kl
            logs["kl"] = kl.detach()
        return loss, logs

    def _teacher(self, emb):
        """The last layer as the KL target; the official 2DMSE and Starbucks code do not detach it."""
        return emb[-1].detach() if self.opts.get("detach_teacher") else emb[-1]

    def _forward(self, forward, ids, mask):
        emb = forward(ids, mask)
        if emb.dim() != 3 or tuple(emb.shape) != (self.L, ids.shape[0], self.H):
            raise ValueError(f"forward must return [layers={self.L}, rows={ids.shape[0]}, hidden={self.H}] "
                             f"(the Encoder's all-layer output), got {tuple(emb.shape)}")
        return emb


def build(method, num_layers, hidden_size, loss_cfg=None, seed=42, **options):
    """The objective of one method; see the module docstring for methods and options."""
    return Objective(method, num_layers, hidden_size, loss_cfg, seed, **options)
