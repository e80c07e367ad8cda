"""2dmse: 2D Matryoshka Sentence Embeddings, AnglE's recipe (the module is named tdmse, as AnglE's trainer).

Paper: Li et al. 2024, "2D Matryoshka Sentence Embeddings" (arXiv:2402.14776). Upstream code followed:
SeanLee97/AnglE `angle_emb/angle.py`, AngleTDMSETrainer.compute_loss. Each step samples a layer n in 1..L-1
and a width d in {8, 16, 32, ...} below the hidden size (AnglE's get_geometric_hidden_sizes), then
    A(L, full) + A(n, full)/n + A(L, d) + A(n, d)/n + KL(softmax(emb_L / T) || softmax(emb_n / T)) * T * ln(2+n)
with the KL at full width and T = 1. Checked against the angle-emb 0.3.10 wheel, which has the 1/n but KL * T
only; the ln(2+n) factor is the commit-347bbb6 recipe this suite targets (kl_log_scale=False gives 0.3.10).
variant="v1" (commit 74e5ba29 = angle-emb 0.3.5): the teacher and the student come from two separate forward
passes, no 1/n, and KL * T^2. The teacher is not detached in either (sentence-transformers issue 3757 argues
it should be: detach_teacher=True). The training widths are the hidden size and the powers of two below it;
the `dims` option does not apply. (n, d) is drawn anew on every forward pass, as AnglE's compute_loss and
sentence-transformers' AdaptiveLayerLoss do: with gradient accumulation or several processes each pass of a
step has its own draw, seeded by (seed, step, draw), so a resumed or distributed run draws the same cells.

Options: variant ("v2" | "v1"), detach_teacher (False), kl_weight (1.0), kl_temperature (1.0),
kl_log_scale (True).

    from twodmse import methods
    objective = methods.build("2dmse", num_layers=6, hidden_size=384, seed=42)
    objective.sample(step=0)     # (layer n, width d) drawn for the first forward pass of that step
"""
import math
import random

import torch

from .. import losses
from ..cells import default_dims
from ..schema import Value
from .grid import DETACH_TEACHER_OPTION, KL_WEIGHT_OPTION, GridMethod

# A sweep picks its values on these cells (twodmse.cells.CELL_SETS): every cell, as an elastic method.
SELECT_ON = "all"


class Method(GridMethod):
    name = "2dmse"
    OPTIONS = {"variant": Value("v2", str, "v2 (one forward pass) or v1 (two, angle-emb 0.3.5)", choices=("v2", "v1")),
               "detach_teacher": DETACH_TEACHER_OPTION, "kl_weight": KL_WEIGHT_OPTION,
               "kl_temperature": Value(1.0, float, "temperature of the KL term's softmax", above=0,
                                       why="0 divides by zero, a negative one reverses the ranking"),
               "kl_log_scale": Value(True, bool, "scale layer n's KL by 1/ln(2+n) (commit 347bbb6)")}

    def __init__(self, num_layers, hidden_size, loss_cfg=None, seed=42, **options):
        if num_layers < 2 or hidden_size <= 8:
            raise ValueError(f"2dmse needs >= 2 layers and hidden > 8, got {num_layers} x {hidden_size}")
        self.sizes = default_dims(hidden_size)[:0:-1]  # 8, 16, ... below the hidden size, as AnglE lists them
        super().__init__(num_layers, hidden_size, loss_cfg, seed, **options)
        self.two_forwards = self.opts["variant"] == "v1"

    def widths(self, default=None):
        return [self.H] + self.sizes[::-1]

    def sample(self, step, draw=0):
        """(layer n, width d) of forward pass `draw` of this step, from a generator seeded by (seed, step, draw).
        The first pass keeps the seed string of one draw per step, so runs without accumulation are unchanged."""
        rng = random.Random(f"2dmse:{self.seed}:{step}" + (f":{draw}" if draw else ""))
        n = rng.randint(1, self.L - 1)  # AnglE samples the layer first, then the width
        return n, rng.choice(self.sizes)

    def cells(self, step=0, draw=0):
        W, L = self.zeros(), self.L
        n, d = self.sample(step, draw)
        for j in (self.col[self.H], self.col[d]):
            W[self.row(L), j] = 1
            W[self.row(n), j] = 1 if self.two_forwards else 1 / n
        return W.float()

    def __call__(self, forward, batch, step, draw=0):
        ids, mask, k, labels = self.unpack(batch)
        cfg = losses.config(self.loss_cfg, k)
        W = self.cells(step, draw)
        logs = {"cells": float((W != 0).sum())}
        n, d = self.sample(step, draw)
        T = self.opts["kl_temperature"]
        logs.update(layer=n, dim=d)
        if self.two_forwards:
            # 74e5ba29 ran the model once for the teacher (layer L) and once more for the student (layer n)
            emb, student = self.forward(forward, ids, mask), self.forward(forward, ids, mask)
            W_teacher = torch.zeros_like(W)
            W_teacher[-1] = W[-1]
            loss = (losses.grid_loss(emb, k, labels, W_teacher, self.dims, cfg)[0]
                    + losses.grid_loss(student, k, labels, W - W_teacher, self.dims, cfg)[0])
            kl_scale = T ** 2
        else:
            emb = student = self.forward(forward, ids, mask)
            loss = losses.grid_loss(emb, k, labels, W, self.dims, cfg)[0]
            kl_scale = T * (math.log(2 + n) if self.opts["kl_log_scale"] else 1.0)
        if self.opts["kl_weight"]:
            kl = losses.kl_div(student[self.row(n)][None], self.teacher(emb)[None], temperature=T)[0]
            loss = loss + self.opts["kl_weight"] * kl_scale * kl
            logs["kl"] = kl.detach()
        return loss, logs
