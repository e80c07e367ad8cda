"""full: every layer x every training width, every step; this suite's dense elastic objective.

No paper: it is the limit of 2DMSE's sampling (all cells instead of one sampled layer and width per step),
computed in one pass by losses.grid_loss, so it costs about one baseline step (benchmarks/train_step.py).
Weights: outer(layer_weights, dim_weights), normalised to sum 1 (a mean over cells by default), plus
anchor_weight on (L, full) so the top cell gets at least the push it gets under baseline.

Options: dims (training widths), layer_weights and dim_weights ("uniform", "linear" (n, d), "inverse"
(1/n, 1/d), or a list: layers 1..L; widths in .dims order), anchor_weight (1.0).

    from twodmse import methods
    objective = methods.build("full", num_layers=6, hidden_size=384, anchor_weight=0)
    objective.cells().sum()    # 1.0
"""
import torch

from ..schema import Value
from .grid import DIMS_OPTION, GridMethod, weighting, weights

# A sweep picks its values on these cells (twodmse.cells.CELL_SETS): every cell, as an elastic method.
SELECT_ON = "all"


class Method(GridMethod):
    name = "full"
    OPTIONS = {"dims": DIMS_OPTION, "layer_weights": weighting("layer"), "dim_weights": weighting("width"),
               "anchor_weight": Value(1.0, float, "extra weight on the (L, H) cell", low=0,
                                      why="a negative weight climbs the top cell's loss")}

    def cells(self, step=0):
        lw = weights(self.opts["layer_weights"], range(1, self.L + 1), "layer_weights")
        dw = weights(self.opts["dim_weights"], self.dims, "dim_weights")
        W = torch.outer(lw, dw)
        W = W / W.sum()
        W[self.row(self.L), self.col[self.H]] += self.opts["anchor_weight"]
        return W.float()
