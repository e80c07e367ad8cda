"""baseline: the plain sentence encoder, trained at the last layer and full width only: cell (L, H).

What every elastic method is compared with: its shallow and narrow cells get no supervision of their own.
The loss is the base loss of losses.py (AnglE's CoSENT for scored pairs, in-batch negatives for triplets),
as sentence-transformers' CoSENTLoss / MultipleNegativesRankingLoss compute it.

Options: dims (the widths W has columns for; only the full width is supervised).

    from twodmse import methods
    objective = methods.build("baseline", num_layers=6, hidden_size=384)
    objective.cells().nonzero()    # [[5, 0]]: layer 6, width 384
"""
from .grid import GridMethod

# A sweep picks its values on these cells (twodmse.cells.CELL_SETS): (L, H), the one cell it trains.
SELECT_ON = "top"


class Method(GridMethod):
    name = "baseline"

    def cells(self, step=0):
        W = self.zeros()
        W[self.row(self.L), self.col[self.H]] = 1
        return W.float()
