"""Which (layer, width) cells: the default widths of every command, Starbucks' diagonal, and the named sets of cells
that claims test and sweeps select on (cell_set).

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


# Named sets of cells, for claims (twodmse.claims) and selection targets (a method's SELECT_ON, twodmse.methods).
CELL_SETS = {"all": "every cell", "shallow": "every width of layers 1..L-1", "top": "(L, H)",
             "last": "every width of layer L", "last-reduced": "layer L, widths below H",
             "shallow-full": "full width, layers 1..L-1", "starbucks-diagonal": "Starbucks' diagonal",
             "each-depth": "(k, H) of each depth k on its own", "lower-half": "every width of layers 1..L/2"}


def cell_set(kind, layers, dims):
    """The (layer, dim) cells of a named set (CELL_SETS) on a grid of these layers and widths; for 'each-depth',
    {k: [(k, H)]}, one set per depth (separate's models, one per depth, are selected one by one)."""
    L, H = max(layers), max(dims)
    if kind == "each-depth":
        return {n: [(n, H)] for n in layers}
    return {"all": [(n, d) for n in layers for d in dims],
            "shallow": [(n, d) for n in layers if n < L for d in dims],
            "top": [(L, H)],
            "last": [(L, d) for d in dims],
            "last-reduced": [(L, d) for d in dims if d < H],
            "shallow-full": [(n, H) for n in layers if n < L],
            "lower-half": [(n, d) for n in layers if n <= L // 2 for d in dims],
            "starbucks-diagonal": starbucks_diagonal(L, dims)}[kind]
