"""starbucks: a fixed diagonal of (layer, width) cells, every step, plus KL of each cell to the last layer.

Paper: Zhuang et al. 2024, "Starbucks: Improved Training for 2D Matryoshka Embeddings" (arXiv:2410.13230).
Upstream code followed: ielab/Starbucks `sts/starbucks_loss.py` (kl_temperature 0.3 as the KL weight).
The diagonal: the K = min(L, len(dims)) largest widths, ascending, paired with layers round(L*i/K), i = 1..K;
6 x 384 -> (1,16) (2,32) (3,64) (4,128) (5,256) (6,384); for 12 x 768 the paper's widths 32..768 are the
default, giving (2,32) (4,64) ... (12,768). Each cell has weight 1; every cell below the top adds
KL(layer L || layer n), both truncated to the cell's width, times 0.3 x kl_weight. Starbucks' own
pre-training (SMAE) is not part of this method.

Options: dims (training widths), kl_weight (1.0), detach_teacher (False).

    from twodmse import methods
    objective = methods.build("starbucks", num_layers=6, hidden_size=384)
    objective.diagonal     # [(1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384)]
"""
import torch

from .. import losses
from ..cells import STARBUCKS_WIDTHS_12x768, starbucks_diagonal
from .grid import DETACH_TEACHER_OPTION, DIMS_OPTION, KL_WEIGHT_OPTION, GridMethod

# A sweep picks its values on these cells (twodmse.cells.CELL_SETS): the diagonal it trains.
SELECT_ON = "starbucks-diagonal"

KL_WEIGHT = 0.3  # ielab/Starbucks: kl_temperature, used as the weight of the KL term


class Method(GridMethod):
    name = "starbucks"
    OPTIONS = {"dims": DIMS_OPTION, "kl_weight": KL_WEIGHT_OPTION, "detach_teacher": DETACH_TEACHER_OPTION}

    def __init__(self, num_layers, hidden_size, loss_cfg=None, seed=42, **options):
        super().__init__(num_layers, hidden_size, loss_cfg, seed, **options)
        self.diagonal = starbucks_diagonal(num_layers, self.dims)

    def widths(self, default=None):
        return super().widths(STARBUCKS_WIDTHS_12x768 if (self.L, self.H) == (12, 768) else None)

    def cells(self, step=0):
        W = self.zeros()
        for n, d in self.diagonal:
            W[self.row(n), self.col[d]] = 1
        return W.float()

    def align(self, emb, step):
        below = [(n, d) for n, d in self.diagonal if n < self.L]
        if not self.opts["kl_weight"] or not below:
            return None, {}
        student = torch.stack([emb[self.row(n)] for n, _ in below])
        widths = losses.to_device(torch.tensor([d for _, d in below]), emb.device)
        kl = losses.kl_div(student, self.teacher(emb).expand_as(student), widths).sum()
        return self.opts["kl_weight"] * KL_WEIGHT * kl, {"kl": kl.detach()}
