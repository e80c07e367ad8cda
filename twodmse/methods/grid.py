"""What every grid method shares: options, training widths, the batch check and the loss over the grid.

A method is one weight matrix W over (layer 1..L) x (width in .dims), from `cells(step)`, plus an optional
alignment term from `align(emb, step)`; the loss is sum(W * cell_loss) + align, computed for all cells in one
pass by losses.grid_loss. Layer n is the output of transformer block n, at row self.row(n) of W and of the
all-layers embeddings (backbone.layer_index).
Training widths default to cells.default_dims(hidden) (the hidden size and the powers of two down to 8); the `dims` option changes them,
and the full width is always included. Sampling is seeded by (seed, step) on the host: deterministic,
resumable, and no device sync.
"""
import torch

from .. import losses, schema
from ..backbone import layer_index
from ..cells import default_dims
from ..schema import Value

WEIGHTINGS = {"uniform": lambda v: 1.0, "linear": lambda v: float(v), "inverse": lambda v: 1.0 / v}
# The options several methods share, declared once (twodmse.schema.Value: type, range, meaning).
DIMS_OPTION = Value(None, list, "the widths of the grid besides the full width; null = the hidden size and the "
                                "powers of two below it down to 8", items=Value(8, int, "a width", low=1))
KL_WEIGHT_OPTION = Value(1.0, float, "weight of the KL term that aligns the lower cells with the top one", low=0,
                         why="a negative weight pushes them apart")
DETACH_TEACHER_OPTION = Value(False, bool, "stop the gradient through the top cell when it is the KL teacher")


def weighting(what):
    """A weighting option: a name in WEIGHTINGS or a list of weights >= 0, one per entry of `what`."""
    return Value("uniform", (str, list), f"weight of each {what}: uniform, linear (grows with it), inverse, or a "
                 f"list with one weight per {what}", choices=tuple(WEIGHTINGS),
                 items=Value(1.0, float, "a weight", low=0))


def weights(spec, values, what):
    """A weighting named in WEIGHTINGS, or a list with one weight per value -> float64 tensor."""
    if isinstance(spec, str):
        if spec not in WEIGHTINGS:
            raise ValueError(f"unknown {what} '{spec}': choose from {sorted(WEIGHTINGS)} or give a list")
        return torch.tensor([WEIGHTINGS[spec](v) for v in values], dtype=torch.float64)
    if len(spec) != len(values):
        raise ValueError(f"{what} has {len(spec)} entries but there are {len(values)}: {values}")
    return torch.tensor(spec, dtype=torch.float64)


class GridMethod:
    """Base of the grid methods: subclasses set OPTIONS and define cells(step), and may define align()."""

    name = None               # the registry's name, for messages
    OPTIONS = {"dims": DIMS_OPTION}  # option -> its declaration (default, type, range)
    two_forwards = False      # True when a step needs two forward passes (DistributedDataParallel cannot)
    # The mixed regime (train key `top_first`): the training loop sets how many first optimizer steps train (L, H)
    # alone, as baseline does, before the method's own cells and alignment term (train.fit).
    top_first_steps = 0
    # Learned loss weights (train key `uncertainty_weights`): s [L, len(dims)], set by learn_weights.
    log_vars = None
    # Gradient surgery (train key `pcgrad`): the loss comes back as two tasks, [top cell, the rest] (surgery.py).
    split_top = False

    def __init__(self, num_layers, hidden_size, loss_cfg=None, seed=42, **options):
        schema.check_all(self.OPTIONS, options, f"method {self.name}")  # for callers of build() that skip validate
        self.L, self.H, self.seed = num_layers, hidden_size, seed
        self.opts = {**schema.defaults(self.OPTIONS), **options}
        self.loss_cfg = dict(loss_cfg or {})
        losses.config(self.loss_cfg, 2)  # fail now on a misspelt key, not at step 1
        self.dims = self.widths()
        if self.loss_cfg.get("angle_w") and any(d % 2 for d in self.dims):
            raise ValueError(f"the angle loss splits each width into halves; odd width in {self.dims}")
        self.col = {d: j for j, d in enumerate(self.dims)}

    def learn_weights(self, device):
        """Uncertainty weighting (Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses
        for Scene Geometry and Semantics", CVPR 2018; no upstream code): each supervised cell's loss l becomes
        exp(-s) l + s, with one s per cell trained with the model, starting at 0 (weight 1). At its optimum s = log l,
        so a cell whose loss stays high is weighed down. Returns the new parameters, for the optimizer."""
        self.log_vars = torch.nn.Parameter(torch.zeros(self.L, len(self.dims), device=device))
        return [self.log_vars]

    def learned_weights(self):
        """{width: [exp(-s) of layers 1..L]}, or None without learned weights."""
        if self.log_vars is None:
            return None
        w = torch.exp(-self.log_vars.detach().cpu())
        return {d: [round(float(w[self.row(n), j]), 4) for n in range(1, self.L + 1)] for d, j in self.col.items()}

    def widths(self, default=None):
        """The columns of W, largest first: the `dims` option (else `default`, else cells.default_dims) plus the
        full width."""
        dims = self.opts.get("dims") or default or default_dims(self.H)
        if not all(0 < d <= self.H for d in dims):
            raise ValueError(f"dims must lie in 1..{self.H}, got {dims}")
        return sorted(set(dims) | {self.H}, reverse=True)

    def cells(self, step=0):
        """W [L, len(dims)] float32: the weight of each (layer, width) cell at this step, 0 = unsupervised."""
        raise NotImplementedError

    def row(self, layer):
        """The row of 1-based layer n in W and in the all-layers embeddings (backbone.layer_index)."""
        return layer_index(layer)

    def top_cell(self):
        """W with (L, H) alone at weight 1: what baseline supervises."""
        W = self.zeros()
        W[self.row(self.L), self.col[self.H]] = 1.0
        return W.float()

    def zeros(self):
        """An empty W to fill: float64 while weights are added up, cast to float32 by cells()."""
        return torch.zeros(self.L, len(self.dims), dtype=torch.float64)

    def align(self, emb, step):
        """An extra loss term on the all-layers embeddings emb [L, rows, H] and its logs, or (None, {})."""
        return None, {}

    def teacher(self, emb):
        """The last layer as the alignment target; the official 2DMSE and Starbucks code do not detach it."""
        return emb[-1].detach() if self.opts.get("detach_teacher") else emb[-1]

    def __call__(self, forward, batch, step, draw=0):
        """forward(input_ids, attention_mask) -> [L, kB, H]; batch = {"input_ids", "attention_mask" [kB, T]
        (rows: B first sentences, B second, B hard negatives if k == 3), "labels": [B] gold scores or None
        for triplets, "k": 2 or 3}; step = the 0-based optimizer step; draw = which forward pass of that step
        this is, counted over gradient accumulation and processes (micro-batch x processes + rank), for a
        method that samples per forward pass. Returns (loss, logs); log values are floats or 0-dim tensors. With
        split_top set, loss is [the top cell's loss, the rest's], for gradient surgery (twodmse.surgery)."""
        ids, mask, k, labels = self.unpack(batch)
        cfg = losses.config(self.loss_cfg, k)
        top_only = step < self.top_first_steps
        W = self.top_cell() if top_only else self.cells(step)
        logs = {"cells": float((W != 0).sum())}
        emb = self.forward(forward, ids, mask)
        _, cells = losses.grid_loss(emb, k, labels, W, self.dims, cfg)
        terms = self.cell_terms(W, cells, learned=not top_only)
        term, extra = self.align(emb, step)  # logged in both regimes, so loss.csv keeps its columns
        logs.update(extra)
        rest = terms.sum() if term is None or top_only else terms.sum() + term
        if self.split_top and not top_only:
            top = self.top_term(W, terms)
            return torch.stack([top, rest - top]), logs
        return rest, logs

    def cell_terms(self, W, cells, learned=True):
        """Each supervised cell's part of the loss, [rows, cols] of losses.active(W): W * l, or with learned
        weights (learn_weights) W * (exp(-s) l + s)."""
        rows, cols = losses.active(W)
        w = losses.to_device(W[rows][:, cols].float(), cells.device)
        if self.log_vars is None or not learned:
            return w * cells
        s = self.log_vars[rows][:, cols]
        return w * (torch.exp(-s) * cells + s)

    def top_term(self, W, terms):
        """The top cell's entry of cell_terms (0 when W leaves it out)."""
        rows, cols = losses.active(W)
        r, c = self.row(self.L), self.col[self.H]
        return terms[rows.index(r), cols.index(c)] if r in rows and c in cols else terms.sum() * 0

    def unpack(self, batch):
        ids, mask, k, labels = batch["input_ids"], batch["attention_mask"], batch["k"], batch.get("labels")
        if k not in (2, 3) or ids.shape[0] % k or (labels is None) != (k == 3):
            raise ValueError(f"batch needs k=2 with labels or k=3 without, and k | rows; got k={k}, "
                             f"rows={ids.shape[0]}, labels={'None' if labels is None else 'given'}")
        return ids, mask, k, labels

    def forward(self, forward, ids, mask):
        emb = forward(ids, mask)
        if emb.dim() != 3 or tuple(emb.shape) != (self.L, ids.shape[0], self.H):
            raise ValueError(f"forward must return [layers={self.L}, rows={ids.shape[0]}, hidden={self.H}] "
                             f"(the Encoder's all-layer output), got {tuple(emb.shape)}")
        return emb
