"""Training methods, one file each, found through this registry; nothing else lists them.

A method says which (layer, width) cells of the grid a training step supervises, how it samples them, and which
layers it aligns to the last one; losses.grid_loss computes every supervised cell in one pass. A method module
holds its docstring (paper, upstream code and commit, what it supervises) and either
  Method    a methods.grid.GridMethod subclass: its OPTIONS (the `method_options` it accepts, each a
            twodmse.schema.Value: default, type, range and meaning), its `cells(step)` weight matrix over
            (layer x width) and its `align(emb, step)` term; trained by twodmse.train's loop, or
  train     train(cfg, out, resume) -> model folder, for a method that trains its own way (separate,
            st-matryoshka2d), with a module-level OPTIONS,
and SELECT_ON, the cells a sweep picks its values on (a name of twodmse.cells.CELL_SETS: "all" for an elastic
method, "top" for baseline, ...; "all" when left out), and may define check_config(cfg, source) for rules on the
rest of the training config.

    from twodmse import methods
    methods.names()                                  # ('baseline', 'mrl', '2dmse', ...), the order reports use
    objective = methods.build("full", num_layers=6, hidden_size=384)
    loss, logs = objective(forward, batch, step)     # see GridMethod.__call__
    objective.cells(step)                            # W [L, D]: the weight of each cell (0 = unsupervised)

Your own method without editing this package: a module with the same parts, named in $TWODMSE_METHODS as
NAME=MODULE (comma-separated for several), e.g. TWODMSE_METHODS=mine=mypkg.mine (see README, "Add a method").
"""
import importlib
import os

from ..util import UserError

# name -> module: one registration line per method, in the order reports and tables show them.
BUILTIN = {
    "baseline": "twodmse.methods.baseline",
    "full": "twodmse.methods.full",
    "separate": "twodmse.methods.separate",
    "mrl": "twodmse.methods.mrl",
    "2dmse": "twodmse.methods.tdmse",
    "starbucks": "twodmse.methods.starbucks",
    "relational": "twodmse.methods.relational",
    "st-matryoshka2d": "twodmse.methods.st_matryoshka2d",
}
ENV = "TWODMSE_METHODS"


def registry():
    """{name: module path}: the built-in methods, then those named in $TWODMSE_METHODS."""
    extra = {}
    for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        name, sep, module = item.partition("=")
        if not sep or not name.strip() or not module.strip():
            raise UserError(f"${ENV}: {item!r} is not NAME=MODULE (e.g. {ENV}=mine=mypkg.mine)")
        extra[name.strip()] = module.strip()
    return {**BUILTIN, **extra}


def names():
    """Every method name, in registry order (importing no method, so no torch)."""
    return tuple(registry())


def get(name):
    """The module of method `name`."""
    known = registry()
    if name not in known:
        raise UserError(f"unknown method {name!r}: choose from {', '.join(known)} (or register yours in ${ENV})")
    try:
        return importlib.import_module(known[name])
    except ImportError as e:
        raise UserError(f"method {name!r}: cannot import its module {known[name]} ({e})") from None


def options(name):
    """The method_options a method accepts: {option: twodmse.schema.Value (default, type, range, meaning)}."""
    module = get(name)
    return module.Method.OPTIONS if hasattr(module, "Method") else module.OPTIONS


def select_on(name):
    """The cells a sweep selects method `name` on (its module's SELECT_ON; "all" when it declares none)."""
    from ..cells import CELL_SETS
    kind = getattr(get(name), "SELECT_ON", "all")
    if kind not in CELL_SETS:
        raise UserError(f"method {name!r}: SELECT_ON = {kind!r} is not one of {', '.join(CELL_SETS)}")
    return kind


def check_options(name, given):
    """Each given method option against the method's declaration: unknown or ill-typed options, and values out of
    range, raise ValueError naming the option; checked before any model loads."""
    from ..schema import check_all
    check_all(options(name), given, f"method {name}")


def trains_itself(name):
    """True for a method with its own train() (no grid objective in twodmse.train's loop)."""
    return hasattr(get(name), "train")


def build(method, num_layers, hidden_size, loss_cfg=None, seed=42, **options):
    """The objective (a GridMethod) of one method for a num_layers x hidden_size model."""
    module = get(method)
    if not hasattr(module, "Method"):
        raise ValueError(f"method {method!r} trains itself ({module.__name__}.train); it has no grid objective")
    return module.Method(num_layers, hidden_size, loss_cfg, seed, **options)
