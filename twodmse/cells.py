"""Which (layer, width) cells: the default widths of every command and Starbucks' diagonal.

Plain Python (no torch), so the report and the claims name the same cells as training and evaluation.
"""
import math

STARBUCKS_WIDTHS_12x768 = [32, 64, 128, 256, 512, 768]  # ielab/Starbucks' sizes on BERT-base


def default_dims(hidden_size, smallest=8):
    """The widths every command uses by default: the hidden size, then the powers of two below it down to
    `smallest` (384 -> [384, 256, 128, 64, 32, 16, 8]; 768 -> [768, 512, ..., 8]). These are the widths that
    AnglE's 2DMSE (get_geometric_hidden_sizes), sentence-transformers' Matryoshka losses, ielab 2DMSE-Reproduce
    and Starbucks train and report, so our grid lines up with theirs."""
    dims, d = [hidden_size], smallest
    while d < hidden_size:
        dims.insert(1, d)
        d *= 2
    return dims


def starbucks_diagonal(num_layers, dims):
    """Starbucks' cells: the K = min(L, len(dims)) largest widths, ascending, paired with layers round(L*i/K),
    i = 1..K (6 x 384 with the default widths: (1,16) (2,32) (3,64) (4,128) (5,256) (6,384))."""
    widths = sorted(dims)[-min(num_layers, len(dims)):]
    K = len(widths)
    return [(math.floor(num_layers * i / K + 0.5), d) for i, d in zip(range(1, K + 1), widths)]
