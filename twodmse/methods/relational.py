"""relational: every cell of the grid, as `full`, plus each cell matching the top cell's in-batch similarities.

No paper trains elastic sentence embeddings this way and no upstream code is followed: it is this suite's. The
extra term is the similarity-distribution matching of SEED (Fang et al. 2021, "SEED: Self-supervised Distillation
for Visual Representation", arXiv:2101.04731), with the batch in place of SEED's queue. Why: 2DMSE's and
Starbucks' KL is a softmax over hidden units, which pulls a shallow cell toward the top cell's coordinates; here a
cell only has to find the same sentences of the batch alike as the top cell does.

For the rows i of a batch (both sides of every pair; with triplets, all three) and a cell (n, d),
P_nd[i] = softmax over j != i of cos_nd(x_i, x_j) / T, and the term is
    distill_weight * mean over the supervised cells below (L, H) of KL(P_LH[i] || P_nd[i]), averaged over rows,
with the teacher P_LH detached by default (detach_teacher), so the top cell is not pulled toward the others.

Options: those of `full` (dims, layer_weights, dim_weights, anchor_weight), distill_weight (1.0),
distill_temperature (0.05, i.e. cosines x 20 as CoSENT's), detach_teacher (True).

    from twodmse import methods
    objective = methods.build("relational", num_layers=6, hidden_size=384, distill_weight=2.0)
    objective.cells().sum()    # 2.0: full's cells, a mean over cells plus the anchor on (L, H)
"""
import torch

from .. import losses
from ..schema import Value
from . import full

# A sweep picks its values on these cells (twodmse.cells.CELL_SETS): every cell, as an elastic method.
SELECT_ON = "all"

OFF = -1e30  # a row's similarity to itself: exp() underflows to 0 and differences stay finite (no 0 * inf)


class Method(full.Method):
    name = "relational"
    OPTIONS = {**full.Method.OPTIONS,
               "distill_weight": Value(1.0, float, "weight of the similarity distillation from the top cell", low=0,
                                       why="a negative weight pushes the cells' similarities apart"),
               "distill_temperature": Value(0.05, float, "temperature of the in-batch similarity softmax", above=0,
                                            why="0 divides by zero, a negative one reverses the ranking"),
               "detach_teacher": Value(True, bool, "stop the gradient through the top cell's similarities")}

    def align(self, emb, step):
        if not self.opts["distill_weight"]:
            return None, {}
        W = self.cells(step)
        W[self.row(self.L), self.col[self.H]] = 0  # the teacher
        rows, cols = losses.active(W)
        x = torch.stack([emb[i] for i in rows]).float()
        widths = losses.to_device(torch.tensor([self.dims[j] for j in cols]), emb.device)
        student = self.log_p(x, widths)                                                     # [C, D, N, N]
        full_width = losses.to_device(torch.tensor([self.H]), emb.device)
        teacher = self.log_p(self.teacher(emb)[None].float(), full_width)[0, 0]             # [N, N]
        kl = (teacher.exp() * (teacher - student)).sum(-1).mean(-1)                        # [C, D]
        active = losses.to_device(W[rows][:, cols] != 0, emb.device)
        term = kl[active].mean()
        return self.opts["distill_weight"] * term, {"distill": term.detach()}

    def log_p(self, x, widths):
        """log softmax over j != i of cos(x_i, x_j) / T, per cell: x [C, N, H] -> [C, D, N, N]."""
        sims = losses.cell_similarities(x, x, widths) / self.opts["distill_temperature"]
        eye = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
        return sims.masked_fill(eye, OFF).log_softmax(-1)
