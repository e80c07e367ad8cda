"""mrl: Matryoshka Representation Learning at the last layer: cells (L, d) for every training width d.

Paper: Kusupati et al. 2022, "Matryoshka Representation Learning" (arXiv:2205.13147). Upstream code followed:
sentence-transformers `sentence_transformers/losses/MatryoshkaLoss.py` (the base loss summed over the
truncated widths, weight 1 each: its default matryoshka_weights).

Options: dims (training widths; default: the hidden size and the powers of two below it down to 8; the full width always in).

    from twodmse import methods
    objective = methods.build("mrl", num_layers=6, hidden_size=384, dims=[384, 128, 32])
    objective.cells()    # row 6 is all ones, every other row zero
"""
from .grid import GridMethod

# A sweep picks its values on these cells (twodmse.cells.CELL_SETS): the last layer's widths, the ones it trains.
SELECT_ON = "last"


class Method(GridMethod):
    name = "mrl"

    def cells(self, step=0):
        W = self.zeros()
        W[self.row(self.L), :] = 1
        return W.float()
